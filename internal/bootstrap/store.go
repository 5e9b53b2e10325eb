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

// maxReplaced bounds the chain of rotations a token is followed through: a
// loop in it would be a corrupt datastore.
const maxReplaced = 100

// ErrPending refuses a token a rotation was moving the cluster to, but
// never finished.
var ErrPending = errors.New("this token is the new token of a 'hakube token rotate' that did not finish: run that command again to finish it, " +
	"or use the cluster's current token (in <data-dir>/server/token on a server that runs)")

// errLoop reports a chain of rotations longer than maxReplaced.
var errLoop = fmt.Errorf("the cluster's token was rotated more than %d times in a chain: the datastore is damaged", maxReplaced)

// Follow opens the data sealed under secret, following the records token
// rotations left (Data.ReplacedBy); current is the secret of the token the
// data is under now. found is false when get finds nothing under secret.
func Follow(get func(key string) ([]byte, bool, error), secret string) (d Data, current string, found bool, err error) {
	for hop := range maxReplaced {
		blob, ok, err := get(Key(secret))
		if err != nil {
			return Data{}, "", hop > 0, err
		}
		if !ok {
			if hop > 0 {
				return Data{}, "", true, errors.New("the cluster's token was rotated, but the data of the new token is missing: the datastore is damaged")
			}
			return Data{}, "", false, nil
		}
		if d, err = Decrypt(secret, blob); err != nil {
			return Data{}, "", true, err
		}
		// Reached through a record, a copy is the cluster's: the rotation
		// committed, and only its last write is missing.
		if d.Pending && hop == 0 {
			return Data{}, "", true, ErrPending
		}
		if d.ReplacedBy == "" {
			return d, secret, true, nil
		}
		secret = d.ReplacedBy
	}
	return Data{}, "", true, errLoop
}

// Load reads and decrypts the cluster's bootstrap data, following token
// rotations; current is the secret of the cluster's token. found is false
// when the datastore holds none.
func Load(ctx context.Context, kv clientv3.KV, secret string) (d Data, current string, found bool, err error) {
	resp, err := kv.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return Data{}, "", false, fmt.Errorf("reading bootstrap data: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Data{}, "", false, nil
	}
	byKey := map[string][]byte{}
	for _, kv := range resp.Kvs {
		byKey[string(kv.Key)] = kv.Value
	}
	d, current, found, err = Follow(func(key string) ([]byte, bool, error) {
		b, ok := byKey[key]
		return b, ok, nil
	}, secret)
	if !found || errors.Is(err, ErrWrongToken) {
		return Data{}, "", true, ErrOtherToken
	}
	return d, current, true, err
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

// Update applies change to the bootstrap data and stores it if no other
// writer stored it in between (else it reads again and retries): two
// servers changing it at once both have their change kept. It follows token
// rotations, so a holder of a replaced token updates the cluster's data.
func Update(ctx context.Context, kv clientv3.KV, secret string, change func(*Data) error) (Data, error) {
	for hop := 0; ; {
		d, rev, err := read(ctx, kv, secret)
		if err != nil {
			return Data{}, err
		}
		if d.ReplacedBy != "" {
			if hop++; hop > maxReplaced {
				return Data{}, errLoop
			}
			secret = d.ReplacedBy
			continue
		}
		if d.Pending && hop == 0 {
			return Data{}, ErrPending
		}
		d.Pending = false
		if err := change(&d); err != nil {
			return Data{}, err
		}
		blob, err := Encrypt(secret, d)
		if err != nil {
			return Data{}, err
		}
		if ok, err := putAt(ctx, kv, Key(secret), rev, blob); err != nil || ok {
			return d, err
		}
	}
}

// Rotate puts the cluster's data under newSecret and leaves under
// oldSecret a record naming it (Data.ReplacedBy), in three writes, each a
// compare-and-put at the revision read: the copy, marked pending; the
// record, only if the data did not change since it was copied; the copy
// unmarked. An interruption before the record leaves the old token in
// force and the copy refused; after it, the cluster's data is the copy.
// Running it again finishes either, and two rotations at once cannot both
// win nor lose a change made meanwhile.
func Rotate(ctx context.Context, kv clientv3.KV, oldSecret, newSecret string) error {
	for range maxReplaced {
		d, rev, err := read(ctx, kv, oldSecret)
		if err != nil {
			return err
		}
		switch d.ReplacedBy {
		case newSecret:
			return Finish(ctx, kv, newSecret)
		case "":
		default:
			return errors.New("this token was replaced by another one already: rotate from the cluster's current token (in <data-dir>/server/token on a server that runs)")
		}
		resp, err := kv.Get(ctx, Key(newSecret))
		if err != nil {
			return fmt.Errorf("reading bootstrap data: %w", err)
		}
		var at int64 // what an earlier, interrupted run left there, if anything
		if len(resp.Kvs) > 0 {
			at = resp.Kvs[0].ModRevision
		}
		cp := d
		cp.Pending = true
		blob, err := Encrypt(newSecret, cp)
		if err != nil {
			return err
		}
		if ok, err := putAt(ctx, kv, Key(newSecret), at, blob); err != nil {
			return err
		} else if !ok {
			continue
		}
		if blob, err = Encrypt(oldSecret, Data{ReplacedBy: newSecret}); err != nil {
			return err
		}
		if ok, err := putAt(ctx, kv, Key(oldSecret), rev, blob); err != nil {
			return err
		} else if ok {
			return Finish(ctx, kv, newSecret)
		}
	}
	return errors.New("the bootstrap data kept changing during the rotation: run it again")
}

// Finish unmarks the copy a committed rotation made under secret
// (Data.Pending). Any server that finds the rotation runs it.
func Finish(ctx context.Context, kv clientv3.KV, secret string) error {
	for {
		d, rev, err := read(ctx, kv, secret)
		if err != nil || !d.Pending {
			return err
		}
		d.Pending = false
		blob, err := Encrypt(secret, d)
		if err != nil {
			return err
		}
		if ok, err := putAt(ctx, kv, Key(secret), rev, blob); err != nil || ok {
			return err
		}
	}
}

// read is the data stored under secret itself, and its revision.
func read(ctx context.Context, kv clientv3.KV, secret string) (Data, int64, error) {
	resp, err := kv.Get(ctx, Key(secret))
	if err != nil {
		return Data{}, 0, fmt.Errorf("reading bootstrap data: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Data{}, 0, errors.New("the datastore holds no bootstrap data under this token")
	}
	d, err := Decrypt(secret, resp.Kvs[0].Value)
	if errors.Is(err, ErrWrongToken) {
		return Data{}, 0, ErrOtherToken
	}
	return d, resp.Kvs[0].ModRevision, err
}

// putAt stores blob at key if it is still at revision rev, in the update
// form kine supports (compare the revision, put, else get).
func putAt(ctx context.Context, kv clientv3.KV, key string, rev int64, blob []byte) (bool, error) {
	txn, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(blob))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("storing bootstrap data: %w", err)
	}
	return txn.Succeeded, nil
}
