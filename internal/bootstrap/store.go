package bootstrap

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrOtherToken means the datastore holds bootstrap data of another token only.
var ErrOtherToken = errors.New("the datastore was created with a different token: its bootstrap data is encrypted with another token. " +
	"Start this server with the token the cluster was created with (--token, --token-file, HAKUBE_TOKEN or K3S_TOKEN; " +
	"it is in <data-dir>/server/token on the first server)")

// Load reads and decrypts the cluster's bootstrap data. found is false when the
// datastore holds none.
func Load(ctx context.Context, kv clientv3.KV, secret string) (d Data, found bool, err error) {
	resp, err := kv.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return Data{}, false, fmt.Errorf("reading bootstrap data: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Data{}, false, nil
	}
	key := Key(secret)
	for _, kv := range resp.Kvs {
		if string(kv.Key) != key {
			continue
		}
		d, err := Decrypt(secret, kv.Value)
		if errors.Is(err, ErrWrongToken) {
			return Data{}, true, ErrOtherToken
		}
		return d, true, err
	}
	return Data{}, true, ErrOtherToken
}

// Create stores d unless bootstrap data already exists. created is false when
// another server stored its data first; the caller then loads that.
func Create(ctx context.Context, kv clientv3.KV, secret string, d Data) (created bool, err error) {
	blob, err := Encrypt(secret, d)
	if err != nil {
		return false, err
	}
	key := Key(secret)
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)). // the create form kine supports
		Then(clientv3.OpPut(key, string(blob))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("storing bootstrap data: %w", err)
	}
	return resp.Succeeded, nil
}

// Update applies change to the bootstrap data under secret's key and stores
// it if no other writer stored it in between (else it reads again and
// retries): two servers changing it at once both have their change kept.
func Update(ctx context.Context, kv clientv3.KV, secret string, change func(*Data) error) (Data, error) {
	key := Key(secret)
	for {
		resp, err := kv.Get(ctx, key)
		if err != nil {
			return Data{}, fmt.Errorf("reading bootstrap data: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return Data{}, errors.New("the datastore holds no bootstrap data under this token")
		}
		d, err := Decrypt(secret, resp.Kvs[0].Value)
		if errors.Is(err, ErrWrongToken) {
			return Data{}, ErrOtherToken
		} else if err != nil {
			return Data{}, err
		}
		if err := change(&d); err != nil {
			return Data{}, err
		}
		blob, err := Encrypt(secret, d)
		if err != nil {
			return Data{}, err
		}
		// The update form kine supports: compare the revision, put, else get.
		txn, err := kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(blob))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return Data{}, fmt.Errorf("storing bootstrap data: %w", err)
		}
		if txn.Succeeded {
			return d, nil
		}
	}
}
