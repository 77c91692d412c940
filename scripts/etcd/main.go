// Command etcd is the storage behind the test control plane (tests/cluster/):
// the upstream etcd server, built from its published module at the version
// the Kubernetes release in ../kube/go.mod pairs with, so no prebuilt binary
// has to be downloaded from anywhere but the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
