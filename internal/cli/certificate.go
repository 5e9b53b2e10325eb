package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
)

func newCertificateCommand() *cobra.Command {
	dataDir := agent.DefaultDataDir
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "The certificates of a server or agent (run on it; they are read from --data-dir)",
	}
	cmd.PersistentFlags().StringVarP(&dataDir, "data-dir", "d", dataDir, "the local server's or agent's data directory")
	var output string
	var window time.Duration
	check := &cobra.Command{
		Use:   "check",
		Short: "Every certificate of this server or agent with its expiry; exits 1 when one expires within the window or has expired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if window < 0 {
				return fmt.Errorf("--window %s: give a duration of 0 or more, like 2880h (120 days)", window)
			}
			l := layout.New(dataDir)
			certs, err := pki.Check(time.Now(), window, l.TLS(), l.AgentTLS())
			if err != nil {
				return err
			}
			if len(certs) == 0 {
				return fmt.Errorf("no certificate in %s or %s: is --data-dir the data directory of a server or agent?", l.TLS(), l.AgentTLS())
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, certs); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "FILE\tSUBJECT\tCA\tEXPIRES\tLEFT\tSTATE")
				for _, c := range certs {
					fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\n", c.File, c.Subject, c.CA, c.NotAfter.Format(time.RFC3339),
						days(time.Duration(c.SecondsLeft)*time.Second), c.State)
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			var due, expired []string
			for _, c := range certs {
				switch c.State {
				case pki.StateDue:
					due = append(due, c.Name)
				case pki.StateExpired:
					expired = append(expired, c.Name)
				}
			}
			if len(due)+len(expired) == 0 {
				return nil
			}
			var b strings.Builder
			if len(expired) > 0 {
				fmt.Fprintf(&b, "%d certificates have expired (%s); ", len(expired), strings.Join(expired, ", "))
			}
			if len(due) > 0 {
				fmt.Fprintf(&b, "%d certificates expire within %s (%s); ", len(due), days(window), strings.Join(due, ", "))
			}
			b.WriteString("a server or agent issues its leaf certificates again when it starts: restart it (a CA near its end needs a new cluster CA)")
			return fmt.Errorf("%s", b.String())
		},
	}
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	check.Flags().DurationVar(&window, "window", pki.RenewWindow, "how close to its expiry a certificate fails the check")
	cmd.AddCommand(check)
	return cmd
}

// days is d in whole days, or hours when under two days.
func days(d time.Duration) string {
	if d > -48*time.Hour && d < 48*time.Hour {
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
