package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/status"
)

func newClusterCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("cluster", "The HA cluster's datastore, whichever kind (run on a server; credentials come from --data-dir)")
	var output, snapDir string
	st := &cobra.Command{
		Use:   "status",
		Short: "Members (role, health, raft index and lag, database size and fragmentation) and how many servers the cluster can lose; exits 1 when unhealthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			kind, ms, err := local.Datastore{Layout: layout.New(*dataDir)}.Members(cmd.Context())
			if err != nil {
				return err
			}
			var members []status.Member
			leader := ""
			for _, m := range ms {
				role := "voter"
				if m.Learner {
					role = "learner"
				}
				if m.Leader {
					leader = m.Name
				}
				members = append(members, status.Member{Name: m.Name, Role: role, Healthy: m.Healthy, RaftIndex: m.RaftIndex,
					DBSize: m.DBSize, DBFree: max(m.DBSize-m.DBSizeUsed, 0), Error: m.Error})
			}
			s := status.New(string(kind), members, leader)
			if snapDir == "" {
				snapDir = layout.New(*dataDir).Snapshots()
			}
			if all, err := snapshot.Dir(snapDir).List(); err == nil && len(all) > 0 {
				m := all[len(all)-1]
				s.LastSnapshot = &status.Snapshot{Name: m.Name, Created: m.Created, Node: m.Node}
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, s); err != nil {
					return err
				}
			} else {
				last := "none in " + snapDir
				if m := s.LastSnapshot; m != nil {
					last = fmt.Sprintf("%s (%s, %s ago)", m.Name, m.Created.Format(time.RFC3339), time.Since(m.Created).Round(time.Second))
				}
				fmt.Fprintf(out, "datastore:     %s\nstatus:        %s\nlast snapshot: %s\n\n", s.Datastore, s.Summary, last)
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tROLE\tHEALTHY\tRAFT INDEX\tLAG\tDB SIZE\tFRAGMENTED")
				for _, m := range s.Members {
					fmt.Fprintf(w, "%s\t%s\t%v\t%d\t%d\t%s\t%.0f%%\n", m.Name, m.Role, m.Healthy, m.RaftIndex, m.Lag, bytes(m.DBSize), 100*m.Fragmentation)
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			if !s.Healthy {
				return errors.New("the cluster is not healthy: " + s.Summary)
			}
			return nil
		},
	}
	st.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	st.Flags().StringVar(&snapDir, "snapshot-dir", "", "where this server's snapshots are, for the last one (default <data-dir>/server/db/snapshots)")
	cmd.AddCommand(st)
	return cmd
}

func bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
