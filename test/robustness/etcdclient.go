package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"

	lin "github.com/hakube/hakube/test/linearizability"
)

// kvClient runs register operations against one member until ctx ends.
type kvClient struct {
	id   int
	cli  *clientv3.Client
	keys []string
	hist *lin.History
	// kine speaks only the request forms of kine's etcd API (Dqlite mode):
	// create, update on a mod revision and delete transactions, no Put.
	kine bool
	// last values read per key, so CAS has a fair chance to succeed, and
	// (kine) their mod revisions, which its updates compare instead.
	seen map[string]string
	rev  map[string]int64
	seq  int
	// counts
	ok, failed int
}

func (c *kvClient) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(c.id), uint64(time.Now().UnixNano())))
	c.seen, c.rev = map[string]string{}, map[string]int64{}
	for ctx.Err() == nil {
		key := c.keys[rng.IntN(len(c.keys))]
		c.seq++
		value := fmt.Sprintf("c%d-%d", c.id, c.seq)
		var in lin.Input
		switch r := rng.IntN(100); {
		case r < 40:
			in = lin.Input{Kind: lin.Get, Key: key}
		case r < 65 && !c.kine:
			in = lin.Input{Kind: lin.Put, Key: key, Value: value}
		case r < 90:
			in = lin.Input{Kind: lin.CAS, Key: key, Expect: c.seen[key], Value: value}
		default:
			in = lin.Input{Kind: lin.Delete, Key: key}
		}
		if !c.do(in) {
			// The member is down or cut off: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// do runs one operation and records it; it reports whether it got an answer.
func (c *kvClient) do(in lin.Input) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	call := c.hist.Now()
	var out lin.Output
	var err error
	switch {
	case in.Kind == lin.Get:
		var resp *clientv3.GetResponse
		if resp, err = c.cli.Get(ctx, in.Key); err == nil {
			c.know(in.Key, "", 0)
			if len(resp.Kvs) > 0 {
				out.Value = string(resp.Kvs[0].Value)
				c.know(in.Key, out.Value, resp.Kvs[0].ModRevision)
			}
		}
	case c.kine:
		out.Succeeded, err = c.writeKine(ctx, in)
	default:
		out.Succeeded, err = c.writeEtcd(ctx, in)
	}
	ret := c.hist.Now()
	if err != nil {
		c.failed++
		if in.Kind == lin.Get {
			return false // a failed read has no effect: leave it out
		}
		out, ret = lin.Output{Unknown: true}, lin.UnknownReturn
	} else {
		c.ok++
	}
	c.hist.Add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret})
	return err == nil
}

// know records a key's value ("" when absent) and its mod revision.
func (c *kvClient) know(key, value string, rev int64) { c.seen[key], c.rev[key] = value, rev }

// writeEtcd runs a write on etcd's full API; for a CAS it reports whether the
// comparison held.
func (c *kvClient) writeEtcd(ctx context.Context, in lin.Input) (bool, error) {
	switch in.Kind {
	case lin.Put:
		resp, err := c.cli.Put(ctx, in.Key, in.Value)
		if err == nil {
			c.know(in.Key, in.Value, resp.Header.Revision)
		}
		return false, err
	case lin.Delete:
		_, err := c.cli.Delete(ctx, in.Key)
		if err == nil {
			c.know(in.Key, "", 0)
		}
		return false, err
	}
	cmp := clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)
	if in.Expect == "" {
		cmp = clientv3.Compare(clientv3.CreateRevision(in.Key), "=", 0)
	}
	resp, err := c.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(in.Key, in.Value)).Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		c.know(in.Key, in.Value, resp.Header.Revision)
	}
	return resp.Succeeded, nil
}

// writeKine runs a write in the forms the apiserver uses, the only ones kine's
// etcd API takes: a CAS is a create when the key is expected absent, else an
// update on the mod revision of the value expected (values are unique, so
// they match exactly when the revisions do); a delete is unconditional.
func (c *kvClient) writeKine(ctx context.Context, in lin.Input) (bool, error) {
	if in.Kind == lin.Delete {
		_, err := c.cli.Txn(ctx).Then(clientv3.OpGet(in.Key), clientv3.OpDelete(in.Key)).Commit()
		if err == nil {
			c.know(in.Key, "", 0)
		}
		return false, err
	}
	txn := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(in.Key), "=", c.rev[in.Key])).Then(clientv3.OpPut(in.Key, in.Value))
	if in.Expect != "" {
		txn = txn.Else(clientv3.OpGet(in.Key))
	}
	resp, err := txn.Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		c.know(in.Key, in.Value, resp.Header.Revision)
	} else if r := resp.Responses; len(r) == 1 && r[0].GetResponseRange() != nil && len(r[0].GetResponseRange().Kvs) == 1 {
		// The value that failed the update: a hint for the next CAS, not an operation.
		kv := r[0].GetResponseRange().Kvs[0]
		c.know(in.Key, string(kv.Value), kv.ModRevision)
	}
	return resp.Succeeded, nil
}
