// Command hakube is a lightweight Kubernetes distribution with a highly
// available control plane on an embedded datastore.
package main

import (
	"os"
	"path/filepath"

	"github.com/hakube/hakube/internal/cli"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(cli.RunKubectl(os.Args[1:]))
	}
	os.Exit(cli.Execute(os.Args[1:]))
}
