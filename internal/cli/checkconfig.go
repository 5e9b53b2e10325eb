package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/checkconfig"
)

func newCheckConfigCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Check that this machine has what a node needs (cgroups, kernel modules, iptables, ...); exits 1 when something required is missing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := checkconfig.Machine().Check()
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				if err := writeJSON(out, fs); err != nil {
					return err
				}
			case "table":
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CHECK\tRESULT\tDETAIL")
				for _, f := range fs {
					fmt.Fprintf(w, "%s\t%s\t%s\n", f.Name, f.Level, f.Detail)
					if f.Fix != "" {
						fmt.Fprintf(w, "\t\tfix: %s\n", f.Fix)
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			default:
				return fmt.Errorf("-o %q: use table or json", output)
			}
			if checkconfig.Failed(fs) {
				return errors.New("this machine lacks something a node needs (see \"missing\" above)")
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
