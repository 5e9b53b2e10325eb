package server

import (
	"strings"
	"testing"

	"github.com/hakube/hakube/internal/datastore"
)

func TestPlanDatastore(t *testing.T) {
	const (
		sqlite = datastore.SQLite
		etcd   = datastore.Etcd
		dqlite = datastore.Dqlite
	)
	for _, tc := range []struct {
		name           string
		clusterInit    bool
		flag           string
		have           []datastore.Kind
		target, source datastore.Kind
		err            string
	}{
		{name: "new single server", target: sqlite},
		{name: "new cluster", clusterInit: true, target: etcd},
		{name: "new Dqlite cluster", clusterInit: true, flag: "dqlite", target: dqlite},
		{name: "restart keeps SQLite", have: []datastore.Kind{sqlite}, target: sqlite},
		{name: "restart keeps etcd", have: []datastore.Kind{etcd}, target: etcd},
		{name: "--cluster-init alone keeps Dqlite", clusterInit: true, have: []datastore.Kind{dqlite}, target: dqlite},
		{name: "--cluster-init moves SQLite to etcd", clusterInit: true, have: []datastore.Kind{sqlite}, target: etcd, source: sqlite},
		{name: "SQLite to Dqlite", clusterInit: true, flag: "dqlite", have: []datastore.Kind{sqlite}, target: dqlite, source: sqlite},
		{name: "Dqlite to etcd", clusterInit: true, flag: "etcd", have: []datastore.Kind{dqlite}, target: etcd, source: dqlite},
		{name: "etcd to Dqlite", clusterInit: true, flag: "dqlite", have: []datastore.Kind{etcd}, target: dqlite, source: etcd},
		{name: "etcd to SQLite", flag: "sqlite", have: []datastore.Kind{etcd}, target: sqlite, source: etcd},
		{name: "interrupted move finished", clusterInit: true, flag: "etcd", have: []datastore.Kind{etcd, dqlite}, target: etcd, source: dqlite},
		{name: "interrupted SQLite to etcd finished by --cluster-init", clusterInit: true, have: []datastore.Kind{sqlite, etcd}, target: etcd, source: sqlite},
		{name: "interrupted move without --datastore", have: []datastore.Kind{etcd, dqlite}, err: "data of etcd and dqlite: a move between datastores was interrupted"},
		{name: "three kinds", flag: "sqlite", have: []datastore.Kind{sqlite, etcd, dqlite}, err: "data of etcd and dqlite: move all but one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, source, err := planDatastore(Config{ClusterInit: tc.clusterInit, Datastore: tc.flag}, tc.have)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || target != tc.target || source != tc.source {
				t.Fatalf("got %s from %q (%v), want %s from %q", target, source, err, tc.target, tc.source)
			}
		})
	}
}
