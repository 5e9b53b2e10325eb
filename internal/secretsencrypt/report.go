package secretsencrypt

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReportsPrefix is where every server says which EncryptionConfiguration its
// apiserver has loaded: a key change waits on these, not on a guess of the
// apiserver's reload delay.
const ReportsPrefix = "/hakube/servers/"

// ReportEvery is how often a server writes its report when nothing changed;
// DownAfter is the age at which a report says its server is down, and
// GoneAfter the age at which it has left the cluster (the apiserver's own
// identity leases are collected after the same hour). A server that comes
// back after any time writes the cluster's current keys before its apiserver
// starts, so one that is gone misses nothing.
const (
	ReportEvery = 10 * time.Second
	DownAfter   = 30 * time.Second
	GoneAfter   = time.Hour
)

// Report is one server's.
type Report struct {
	Server string `json:"server"`
	// Loaded is the Hash of the configuration its apiserver runs with.
	Loaded string `json:"loaded"`
	// Token is the datastore key of the bootstrap data of the token the
	// server holds ('hakube token rotate' waits on it); not a secret.
	Token string `json:"token,omitempty"`
	// CA is the pki.SharedTrust of the CAs the server runs with ('hakube
	// certificate rotate-ca' waits on it).
	CA      string    `json:"ca,omitempty"`
	Updated time.Time `json:"updated"`
}

// WriteReport stores r under its server's name.
func WriteReport(ctx context.Context, kv clientv3.KV, r Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, ReportsPrefix+r.Server, string(b))
	return err
}

// ReadReports lists every server's report, by name.
func ReadReports(ctx context.Context, kv clientv3.KV) ([]Report, error) {
	resp, err := kv.Get(ctx, ReportsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading the servers' reports: %w", err)
	}
	var out []Report
	for _, e := range resp.Kvs {
		var r Report
		if err := json.Unmarshal(e.Value, &r); err != nil {
			return nil, fmt.Errorf("the report %s is corrupt: %w", e.Key, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Server < out[j].Server })
	return out, nil
}

// DeleteReport removes server's report, in the form kine supports (a
// delete at the key's revision; kine has no plain delete).
func DeleteReport(ctx context.Context, kv clientv3.KV, server string) error {
	key := ReportsPrefix + server
	resp, err := kv.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	_, err = kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key)).
		Commit()
	return err
}
