package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
	ctrapp "github.com/containerd/containerd/v2/cmd/ctr/app"
	"github.com/spf13/cobra"

	// containerd's built-in plugins, the CRI among them.
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/agent/containerd"
	"github.com/hakube/hakube/internal/layout"
)

// newContainerdCommand is containerd itself: the node starts it as a child
// process of this binary, as K3s does.
func newContainerdCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "containerd",
		Short:              "Run containerd (the node starts it; not for direct use)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return command.App().Run(cmd.Context(), append([]string{"containerd"}, args...))
		},
	}
}

const runtimeHelp = `The node's data directory is ` + agent.DefaultDataDir + ` unless the first
arguments are --data-dir DIR.`

// newCtrCommand is containerd's ctr, pointed at this node's containerd and
// the namespace of Kubernetes' images.
func newCtrCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "ctr",
		Short:              "Run containerd's ctr against this node's containerd",
		Long:               "Run containerd's ctr against this node's containerd, in namespace " + containerd.Namespace + ".\n" + runtimeHelp,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, args := runtimeDataDir(args)
			setDefaultEnv("CONTAINERD_ADDRESS", l.ContainerdSocket())
			setDefaultEnv("CONTAINERD_NAMESPACE", containerd.Namespace)
			return ctrapp.New().Run(context.WithoutCancel(cmd.Context()), append([]string{"ctr"}, args...))
		},
	}
}

// newCrictlCommand runs the crictl shipped beside this binary against this
// node's containerd.
func newCrictlCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "crictl",
		Short:              "Run crictl against this node's container runtime",
		Long:               "Run crictl (shipped beside hakube) against this node's containerd.\n" + runtimeHelp,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			l, args := runtimeDataDir(args)
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			bin := filepath.Join(filepath.Dir(exe), "crictl")
			setDefaultEnv("CONTAINER_RUNTIME_ENDPOINT", "unix://"+l.ContainerdSocket())
			c := exec.Command(bin, args...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = c.Run()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				os.Exit(exit.ExitCode())
			}
			if err != nil {
				return fmt.Errorf("%w: crictl ships beside hakube (make build puts it in bin/)", err)
			}
			return nil
		},
	}
}

// runtimeDataDir takes a leading --data-dir off args.
func runtimeDataDir(args []string) (layout.Layout, []string) {
	dir := agent.DefaultDataDir
	switch {
	case len(args) >= 2 && (args[0] == "--data-dir" || args[0] == "-d"):
		dir, args = args[1], args[2:]
	case len(args) >= 1 && strings.HasPrefix(args[0], "--data-dir="):
		dir, args = strings.TrimPrefix(args[0], "--data-dir="), args[1:]
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	return layout.New(dir), args
}

func setDefaultEnv(k, v string) {
	if os.Getenv(k) == "" {
		os.Setenv(k, v)
	}
}
