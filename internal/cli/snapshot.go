package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/snapshot"
)

func newSnapshotCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("etcd-snapshot", "Save, list, delete and prune snapshots of the embedded etcd or Dqlite datastore (run on a server)")
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "snapshot directory (default <data-dir>/server/db/snapshots)")
	snapDir := func() snapshot.Dir {
		if dir != "" {
			return snapshot.Dir(dir)
		}
		return snapshot.Dir(filepath.Join(*dataDir, "server", "db", "snapshots"))
	}

	var name string
	var compress bool
	save := &cobra.Command{
		Use:   "save",
		Short: "Take a snapshot of this server's datastore member (refused on a learner)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := snapshot.Take(cmd.Context(), local.Datastore{DataDir: *dataDir}, snapDir(), name, compress)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved snapshot %s (%s, %s, sha256 %s)\n", m.Name, m.Location, bytes(m.Size), m.SHA256)
			return nil
		},
	}
	save.Flags().StringVar(&name, "name", "on-demand", "name prefix; the node name and the time are appended")
	save.Flags().BoolVar(&compress, "compress", false, "gzip the snapshot")

	var output string
	list := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshots: name, location, size, created, node",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all, err := snapDir().List()
			if err != nil {
				return err
			}
			if output == "json" {
				if all == nil {
					all = []snapshot.Meta{}
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tLOCATION\tSIZE\tCREATED\tNODE\tDATASTORE")
			for _, m := range all {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Location, bytes(m.Size), m.Created.Format(time.RFC3339), m.Node, m.Datastore)
			}
			return w.Flush()
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	del := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete snapshots",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := snapDir().Delete(args...); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", strings.Join(args, ", "))
			return nil
		},
	}

	var keep int
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete all but the newest --snapshot-retention snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gone, err := snapDir().Prune(keep)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pruned %d snapshots%s\n", len(gone), strings.TrimSuffix(": "+strings.Join(gone, ", "), ": "))
			return nil
		},
	}
	prune.Flags().IntVar(&keep, "snapshot-retention", 5, "how many snapshots to keep")
	cmd.AddCommand(save, list, del, prune)
	return cmd
}
