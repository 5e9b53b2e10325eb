// Package version reports what this binary is.
package version

import (
	"fmt"

	k8sversion "k8s.io/component-base/version"
)

// Version is set at build time with -ldflags "-X github.com/hakube/hakube/internal/version.Version=...".
var Version = "dev"

// String is the --version text.
func String() string {
	return fmt.Sprintf("hakube version %s (kubernetes %s)", Version, k8sversion.Get().GitVersion)
}
