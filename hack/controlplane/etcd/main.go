// Command etcd is the etcd server built from the published
// go.etcd.io/etcd/server/v3 module. Upstream's own main package lives in the
// root module go.etcd.io/etcd/v3, whose go.mod replaces everything with local
// paths; etcdmain.Main is exactly what that main calls.
//
// This is a separate module so that etcd's dependency versions do not raise
// the ones kube-apiserver is built with (../go.mod).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
