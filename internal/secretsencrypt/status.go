package secretsencrypt

import (
	"bytes"
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SecretsPrefix is where the apiserver keeps Secrets in the datastore.
const SecretsPrefix = "/registry/secrets/"

// Clear is the ByKey entry of Secrets stored without encryption.
const Clear = "(clear)"

// Status is what 'hakube secrets-encrypt status' reports.
type Status struct {
	// Enabled: the cluster encrypts Secrets, with Active.
	Enabled bool     `json:"enabled"`
	Active  string   `json:"activeKey,omitempty"`
	Keys    []string `json:"keys"`
	// ConfigCurrent: this server's EncryptionConfiguration holds the
	// cluster's keys as they are now.
	ConfigCurrent bool `json:"configCurrent"`
	// Secrets is how many are stored; ByKey counts them by the key that
	// wrote them (Clear: none).
	Secrets int            `json:"secrets"`
	ByKey   map[string]int `json:"byKey"`
	// AllActive: every Secret is under the active key (or, disabled, in clear).
	AllActive bool `json:"allUnderActiveKey"`
	// Unreadable names Secrets stored by a provider these keys are not for.
	Unreadable []string `json:"unreadable,omitempty"`
	// Change is a key change that began and did not finish.
	Change string `json:"change,omitempty"`
	// Servers is what each server reported; ServersAgree: every one that
	// runs has loaded the cluster's keys.
	Servers      []ServerStatus `json:"servers"`
	ServersAgree bool           `json:"serversAgree"`
}

// ServerStatus is one server's part in Status.
type ServerStatus struct {
	Name string `json:"name"`
	// State is "current", "behind" (its apiserver runs with other keys),
	// "down" or "gone" (see DownAfter, GoneAfter).
	State    string    `json:"state"`
	Reported time.Time `json:"reported"`
}

// AddServers fills in the servers' part from their reports.
func (st *Status) AddServers(cluster *State, reports []Report, now time.Time) {
	cfg, err := cluster.Config()
	want := Hash(cfg)
	st.ServersAgree = err == nil && len(reports) > 0
	if cluster != nil {
		st.Change = cluster.Change
	}
	st.Servers = []ServerStatus{}
	for _, r := range reports {
		s := ServerStatus{Name: r.Server, Reported: r.Updated, State: "current"}
		switch age := now.Sub(r.Updated); {
		case age > GoneAfter:
			s.State = "gone"
		case age > DownAfter:
			s.State = "down"
		case r.Loaded != want:
			s.State, st.ServersAgree = "behind", false
		}
		st.Servers = append(st.Servers, s)
	}
}

// Inspect reads every Secret as stored (kv is the datastore's etcd API)
// and compares this server's EncryptionConfiguration (local) with the
// cluster's keys (nil when the cluster never had any).
func Inspect(ctx context.Context, kv clientv3.KV, cluster *State, local []byte) (Status, error) {
	st := Status{ByKey: map[string]int{}, Keys: []string{}}
	if cluster != nil {
		st.Enabled, st.Active = cluster.Active != "", cluster.Active
		for _, k := range cluster.Keys {
			st.Keys = append(st.Keys, k.Name)
		}
	}
	want, err := cluster.Config()
	if err != nil {
		return Status{}, err
	}
	st.ConfigCurrent = bytes.Equal(want, local)
	// Pages of 500, so a cluster with many large Secrets is not one response.
	key, end := SecretsPrefix, clientv3.GetPrefixRangeEnd(SecretsPrefix)
	for {
		resp, err := kv.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(500))
		if err != nil {
			return Status{}, err
		}
		for _, e := range resp.Kvs {
			st.Secrets++
			name, err := KeyOf(e.Value)
			switch {
			case err != nil:
				st.Unreadable = append(st.Unreadable, string(e.Key)+": "+err.Error())
			case name == "":
				st.ByKey[Clear]++
			default:
				st.ByKey[name]++
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	under := Clear
	if st.Enabled {
		under = st.Active
	}
	st.AllActive = st.ByKey[under] == st.Secrets
	return st, nil
}
