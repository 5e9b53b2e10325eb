// Package cli holds hakube's commands; each one only turns flags into a
// component's config and calls it.
package cli

import (
	"context"
	"encoding/json"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/version"
)

// Execute runs the hakube command line and returns the exit code.
func Execute(args []string) int {
	// Kubernetes packages register flags on pflag's global set at init; cobra would
	// merge them into ours (a clashing --version among them), so start it empty.
	pflag.CommandLine = pflag.NewFlagSet("hakube", pflag.ContinueOnError)
	root := newRoot()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "hakube: error: %v\n", err)
		return 1
	}
	return 0
}

// checkOutput refuses an --output other than table or json.
func checkOutput(output string) error {
	if output != "table" && output != "json" {
		return fmt.Errorf("--output %q: give table or json", output)
	}
	return nil
}

// writeJSON prints v as indented JSON, as every -o json does.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "hakube",
		Short: "A lightweight Kubernetes with a highly available control plane on an embedded datastore",
		Long: `hakube runs Kubernetes from one binary. A single server keeps its state in an
embedded SQLite database; three or more servers form a highly available control
plane on embedded etcd, with no external database to run.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nRun '%s --help' for usage", err, c.CommandPath())
	})
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	v := pflag.PFlagFromGoFlag(klogFlags.Lookup("v"))
	v.Usage = "log verbosity (0-10)"
	root.PersistentFlags().AddFlag(v)
	root.AddCommand(newServerCommand(), newKubectlCommand(), newEtcdCommand(), newClusterCommand(), newSnapshotCommand(),
		newCheckConfigCommand(), newCertificateCommand(), newSecretsEncryptCommand(), newTokenCommand(), newAgentCommand(), newContainerdCommand(), newCtrCommand(), newCrictlCommand(),
		newInstallCommand(), newUninstallCommand())
	return root
}
