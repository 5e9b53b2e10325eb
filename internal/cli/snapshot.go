package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/snapshot"
)

func newSnapshotCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("etcd-snapshot", "Save, list, delete and prune snapshots of the embedded etcd or Dqlite datastore (run on a server)")
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "snapshot directory (default <data-dir>/server/db/snapshots)")
	s3 := snapshot.NewS3Config()
	addS3Flags(cmd.PersistentFlags(), &s3)
	// store is the S3 store when --etcd-s3 is given, else nil.
	store := func(cmd *cobra.Command) (*snapshot.S3, error) {
		if !s3.Enabled {
			return nil, nil
		}
		return snapshot.NewS3(cmd.Context(), s3)
	}
	snapDir := func() snapshot.Dir {
		if dir != "" {
			return snapshot.Dir(dir)
		}
		return snapshot.Dir(layout.New(*dataDir).Snapshots())
	}

	var name string
	var compress bool
	save := &cobra.Command{
		Use:   "save",
		Short: "Take a snapshot of this server's datastore member (refused on a learner)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store(cmd)
			if err != nil {
				return err
			}
			m, err := snapshot.Take(cmd.Context(), local.Datastore{Layout: layout.New(*dataDir)}, snapDir(), name, compress)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved snapshot %s (%s, %s, sha256 %s)\n", m.Name, m.Location, bytes(m.Size), m.SHA256)
			if st != nil {
				if m, err = st.Upload(cmd.Context(), snapDir(), m); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "copied snapshot %s to %s\n", m.Name, m.Location)
			}
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
			if err := checkOutput(output); err != nil {
				return err
			}
			all, err := snapDir().List()
			if err != nil {
				return err
			}
			st, err := store(cmd)
			if err != nil {
				return err
			}
			if st != nil {
				remote, err := st.List(cmd.Context())
				if err != nil {
					return err
				}
				all = append(all, remote...)
			}
			if output == "json" {
				if all == nil {
					all = []snapshot.Meta{}
				}
				return writeJSON(cmd.OutOrStdout(), all)
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
		Short: "Delete snapshots (with --etcd-s3, from the S3 store)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store(cmd)
			if err != nil {
				return err
			}
			if st != nil {
				err = st.Delete(cmd.Context(), args...)
			} else {
				err = snapDir().Delete(args...)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", strings.Join(args, ", "))
			return nil
		},
	}

	var keep int
	var prefix string
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete all but the newest --snapshot-retention snapshots [named --name...] (with --etcd-s3, in the S3 store)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store(cmd)
			if err != nil {
				return err
			}
			var gone []string
			if st != nil {
				gone, err = st.Prune(cmd.Context(), prefix, keep)
			} else {
				gone, err = snapDir().Prune(prefix, keep)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pruned %d snapshots%s\n", len(gone), strings.TrimSuffix(": "+strings.Join(gone, ", "), ": "))
			return nil
		},
	}
	prune.Flags().IntVar(&keep, "snapshot-retention", 5, "how many snapshots to keep")
	prune.Flags().StringVar(&prefix, "name", "", "prune only snapshots whose names start with this (default: all)")
	cmd.AddCommand(save, list, del, prune)
	return cmd
}
