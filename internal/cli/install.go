package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/install"
	"github.com/hakube/hakube/internal/server"
)

func newInstallCommand() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "install server|agent [flags of the server or agent]",
		Short: "Install hakube as a systemd service that starts at boot",
		Long: `Install hakube as a systemd service: the binary and its node bundle (runc, the
shim, crictl, cni/, images/) go to /usr/local/lib/hakube, linked from
/usr/local/bin/hakube; the unit hakube.service (a server) or
hakube-agent.service (an agent) runs it with the flags given after the role and
restarts it whenever it exits, so a cluster heals from a power cut by itself.
The token (--token, --agent-token, HAKUBE_TOKEN, K3S_TOKEN) goes to the unit's
environment file, readable by root only, never onto its command line. The
flags are checked now, so a typo fails here rather than at boot. Where systemd
runs, the unit is enabled and started; 'systemctl start' returns once hakube is
ready. Installing again replaces the flags; 'hakube uninstall' removes it all.`,
		Example: `  HAKUBE_TOKEN=SECRET hakube install server --cluster-init
  HAKUBE_TOKEN=SECRET hakube install server --server https://<server1>:6443
  HAKUBE_TOKEN=SECRET hakube install agent --server https://<server1>:6443`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, flags := args[0], args[1:]
			c := install.Config{Role: role, Root: root, Enable: root == "/" && install.SystemdRunning()}
			var err error
			if c.Args, c.Token, c.AgentToken, err = serviceFlags(role, flags); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			c.Source = filepath.Dir(exe)
			return install.Install(c, cmd.OutOrStdout())
		},
	}
	// Flags after the role are the service's, not install's.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&root, "root", "/", "write every file under this directory instead of / (a package or image being built); nothing is started")
	return cmd
}

// serviceFlags checks the flags a service will run with, by parsing them as
// the role's command does, and takes the tokens out of them for the
// environment file. A token in none of them comes from the environment.
func serviceFlags(role string, flags []string) (args []string, token, agentToken string, err error) {
	var cmd *cobra.Command
	switch role {
	case "server":
		cmd = newServerCommand()
	case "agent":
		cmd = newAgentCommand()
	default:
		return nil, "", "", fmt.Errorf("install %q: give server or agent, then the flags the service runs with", role)
	}
	if err := cmd.ParseFlags(flags); err != nil {
		return nil, "", "", fmt.Errorf("hakube %s %s: %w (see 'hakube %s --help')", role, strings.Join(flags, " "), err, role)
	}
	if rest := cmd.Flags().Args(); len(rest) > 0 {
		return nil, "", "", fmt.Errorf("hakube %s takes flags only, not %q", role, rest)
	}
	token = cmd.Flags().Lookup("token").Value.String()
	args = stripFlag(flags, "token", "t")
	if token == "" {
		token = firstEnv("HAKUBE_TOKEN", "K3S_TOKEN")
	}
	if f := cmd.Flags().Lookup("agent-token"); f != nil {
		agentToken = f.Value.String()
		args = stripFlag(args, "agent-token", "")
		if agentToken == "" {
			agentToken = firstEnv("HAKUBE_AGENT_TOKEN", "K3S_AGENT_TOKEN")
		}
	}
	return args, token, agentToken, nil
}

// stripFlag removes every form of one flag and its value from args: --name
// v, --name=v, and the shorthand's -s v, -sv, -s=v.
func stripFlag(args []string, name, short string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--"+name || (short != "" && a == "-"+short):
			i++ // its value
		case strings.HasPrefix(a, "--"+name+"="):
		case short != "" && strings.HasPrefix(a, "-"+short) && !strings.HasPrefix(a, "--"):
		default:
			out = append(out, a)
		}
	}
	return out
}

func newUninstallCommand() *cobra.Command {
	var root string
	var removeData bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove what 'hakube install' wrote",
		Long: `Stop and disable hakube's systemd units and remove them, their environment
files, /usr/local/lib/hakube and the /usr/local/bin/hakube link. With
--remove-data, the data (` + server.NewConfig().DataDir + `, and the --data-dir of each unit) and
/etc/hakube go too: the node's state, and on a server its datastore; a
server that is a member of a cluster should leave it first
('hakube etcd member remove' on another server).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs := []string{server.NewConfig().DataDir, agent.DefaultDataDir, filepath.Dir(server.NewConfig().WriteKubeconfig)}
			dirs = append(dirs, install.DataDirs(root)...)
			return install.Uninstall(root, root == "/" && install.SystemdRunning(), removeData, dirs, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&root, "root", "/", "the directory 'hakube install --root' wrote under")
	cmd.Flags().BoolVar(&removeData, "remove-data", false, "remove the data and configuration directories too")
	return cmd
}
