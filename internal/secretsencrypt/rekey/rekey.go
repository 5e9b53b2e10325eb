// Package rekey changes the cluster's keys for Secrets at rest on a running
// cluster: rotate-keys, enable and disable. Each is a few steps, and every
// step is recorded in the bootstrap data before it is taken, so running the
// command again after an interruption at any point (the server running it
// killed, a timeout) resumes where it stopped:
//
//  1. the new configuration is stored; each server's hakube writes it to its
//     file and its apiserver rereads it (every 5 s);
//  2. the command waits until every server reports that its apiserver runs
//     with exactly that configuration (the apiserver's own hash of the file),
//     and refuses to start while a server is down;
//  3. every Secret is rewritten through the apiserver, which stores it under
//     the active key (or in clear), and the datastore is read back to check;
//  4. keys nothing is stored under any more are dropped, and every server
//     loads that too.
//
// A key is never dropped before every Secret was rewritten and read back
// under its successor, and a key is never made active before every server
// can read what it writes. A server that starts during a change reports
// before it reads the keys, so the change waits for it as well.
package rekey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/secretsencrypt"
)

// Op is a key change.
type Op string

const (
	RotateKeys Op = "rotate-keys"
	Enable     Op = "enable"
	Disable    Op = "disable"
)

// Config is what a change needs; all of it is on a server.
type Config struct {
	// KV is the datastore; Secret the token's, which seals the bootstrap data.
	KV     clientv3.KV
	Secret string
	// Client reaches an apiserver of the cluster, to rewrite Secrets.
	Client kubernetes.Interface
	// Out gets the progress lines.
	Out io.Writer
	// Wait bounds each wait for every server to load a configuration.
	Wait time.Duration
	// Workers rewrite Secrets in parallel.
	Workers int
}

// Run carries out op, or resumes it.
func Run(ctx context.Context, c Config, op Op) error {
	// The etcd client waits for its connection: a stopped server's would
	// hold it forever.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, _, _, err := bootstrap.Load(lctx, c.KV, c.Secret)
	if err != nil {
		if lctx.Err() != nil {
			err = fmt.Errorf("%w: is this server running?", err)
		}
		return err
	}
	st := data.Encryption
	if st != nil && st.Change != "" && st.Change != string(op) {
		return fmt.Errorf("'hakube secrets-encrypt %s' began and did not finish: run it again to finish it first", st.Change)
	}
	if err := c.checkServers(lctx); err != nil {
		return err
	}
	ch := &change{Config: c, op: op}
	if st != nil && st.Change == string(op) {
		ch.id = st.ChangeID
		c.say("resuming the %s that began earlier (active key: %s)", op, orNone(st.Active))
	}
	switch op {
	case RotateKeys:
		return ch.rotate(ctx, st)
	case Enable:
		return ch.enable(ctx, st)
	case Disable:
		return ch.disable(ctx, st)
	}
	return fmt.Errorf("unknown key change %q", op)
}

// change is one run of a key change. id names the change it began or
// resumes: a run working from a stale view (another run finished the change
// meanwhile, or began the next one) fails rather than undo that.
type change struct {
	Config
	op Op
	id string
}

// begin stores the change's first step.
func (ch *change) begin(ctx context.Context, apply func(*secretsencrypt.State)) (*secretsencrypt.State, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b)
	st, err := ch.store(ctx, func(s *secretsencrypt.State) error {
		if s.Change != "" {
			return errors.New("another key change began meanwhile: see 'hakube secrets-encrypt status'")
		}
		apply(s)
		s.Change, s.ChangeID = string(ch.op), id
		return nil
	})
	if err == nil {
		ch.id = id
	}
	return st, err
}

// step stores a later step of this change.
func (ch *change) step(ctx context.Context, apply func(*secretsencrypt.State)) (*secretsencrypt.State, error) {
	return ch.store(ctx, func(s *secretsencrypt.State) error {
		if s.Change != string(ch.op) || s.ChangeID != ch.id {
			return errors.New("another run finished this key change, or began another, meanwhile: see 'hakube secrets-encrypt status'")
		}
		apply(s)
		return nil
	})
}

// newKey is a key named apart from the keys st holds (names are to the
// second: two rotations in one second).
func newKey(st *secretsencrypt.State) (secretsencrypt.Key, error) {
	for {
		k, err := secretsencrypt.NewKey(time.Now())
		if err != nil || st == nil || !slices.ContainsFunc(st.Keys, func(o secretsencrypt.Key) bool { return o.Name == k.Name }) {
			return k, err
		}
		time.Sleep(time.Second)
	}
}

// addThenActivate is the first steps of rotate-keys and enable: a new key
// that every server reads before any server writes with it (a server that
// wrote with a key another cannot read yet would make its Secrets
// unreadable there), then that key active.
func (ch *change) addThenActivate(ctx context.Context, st *secretsencrypt.State, steps int) (*secretsencrypt.State, error) {
	if st == nil || st.Change == "" {
		k, err := newKey(st)
		if err != nil {
			return nil, err
		}
		if st, err = ch.begin(ctx, func(s *secretsencrypt.State) { s.Keys = append([]secretsencrypt.Key{k}, s.Keys...) }); err != nil {
			return nil, err
		}
		ch.say("step 1/%d: added the key %s; every server must be able to read what it will write", steps, k.Name)
	}
	next := st.Keys[0].Name
	if err := ch.waitServers(ctx, st); err != nil {
		return nil, err
	}
	if st.Active != next {
		var err error
		if st, err = ch.step(ctx, func(s *secretsencrypt.State) { s.Active = next }); err != nil {
			return nil, err
		}
		ch.say("step 2/%d: %s is the active key; waiting for every server to write new Secrets with it", steps, next)
		if err := ch.waitServers(ctx, st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// onlyActive drops every key but the active one.
func onlyActive(s *secretsencrypt.State) {
	s.Keys = slices.DeleteFunc(s.Keys, func(k secretsencrypt.Key) bool { return k.Name != s.Active })
}

func (ch *change) rotate(ctx context.Context, st *secretsencrypt.State) error {
	if !st.Enabled() {
		return errors.New("secrets are not encrypted: run 'hakube secrets-encrypt enable' first (it makes a key)")
	}
	return ch.toNewKey(ctx, st)
}

func (ch *change) enable(ctx context.Context, st *secretsencrypt.State) error {
	if st.Enabled() && st.Change == "" {
		ch.say("Secrets are encrypted already, with %s", st.Active)
		return nil
	}
	return ch.toNewKey(ctx, st)
}

// toNewKey is rotate-keys and enable: a new key read everywhere, then active
// everywhere, every Secret rewritten under it, then the others dropped.
func (ch *change) toNewKey(ctx context.Context, st *secretsencrypt.State) error {
	began := time.Now()
	st, err := ch.addThenActivate(ctx, st, 4)
	if err != nil {
		return err
	}
	if err := ch.rewrite(ctx, st, "step 3/4"); err != nil {
		return err
	}
	return ch.finish(ctx, "step 4/4", began, onlyActive)
}

func (ch *change) disable(ctx context.Context, st *secretsencrypt.State) error {
	if !st.Enabled() && (st == nil || st.Change == "") {
		ch.say("Secrets are stored in clear already")
		return nil
	}
	began := time.Now()
	if st.Change == "" {
		var err error
		// Every server reads clear values already: identity is in every configuration.
		if st, err = ch.begin(ctx, func(s *secretsencrypt.State) { s.Active = "" }); err != nil {
			return err
		}
		ch.say("step 1/3: new Secrets are written in clear; waiting for every server to do so")
	}
	if err := ch.waitServers(ctx, st); err != nil {
		return err
	}
	if err := ch.rewrite(ctx, st, "step 2/3"); err != nil {
		return err
	}
	return ch.finish(ctx, "step 3/3", began, func(s *secretsencrypt.State) { s.Keys = nil })
}

// finish drops the keys retire leaves out, ends the change, and waits for
// every server to load the result.
func (ch *change) finish(ctx context.Context, step string, began time.Time, retire func(*secretsencrypt.State)) error {
	st, err := ch.step(ctx, func(s *secretsencrypt.State) {
		retire(s)
		s.Change, s.ChangeID = "", ""
	})
	if err != nil {
		return err
	}
	ch.say("%s: kept only the keys Secrets are under (%s)", step, orNone(strings.Join(keyNames(st), ", ")))
	if err := ch.waitServers(ctx, st); err != nil {
		return err
	}
	ch.say("done in %s", time.Since(began).Round(100*time.Millisecond))
	return nil
}

// store applies change to the cluster's keys in the bootstrap data.
func (c Config) store(ctx context.Context, change func(*secretsencrypt.State) error) (*secretsencrypt.State, error) {
	d, err := bootstrap.Update(ctx, c.KV, c.Secret, func(d *bootstrap.Data) error {
		if d.Encryption == nil {
			d.Encryption = &secretsencrypt.State{}
		}
		if err := change(d.Encryption); err != nil {
			return err
		}
		return d.Encryption.Validate()
	})
	return d.Encryption, err
}

// checkServers refuses a change while a server is down: it would not load
// the steps, and the command could not tell when it can go on.
func (c Config) checkServers(ctx context.Context) error {
	reports, err := secretsencrypt.ReadReports(ctx, c.KV)
	if err != nil {
		return err
	}
	var down []string
	fresh := 0
	for _, r := range reports {
		age := time.Since(r.Updated)
		if age <= secretsencrypt.DownAfter {
			fresh++
		}
		switch {
		case age > secretsencrypt.GoneAfter:
			c.say("not waiting for %s: it last reported %s ago, and has left the cluster", r.Server, age.Round(time.Minute))
		case age > secretsencrypt.DownAfter:
			down = append(down, fmt.Sprintf("%s (last seen %s ago)", r.Server, age.Round(time.Second)))
		}
	}
	if fresh == 0 {
		// Nothing to wait on would verify nothing.
		return fmt.Errorf("no server has reported its encryption configuration in the last %s: is the cluster running, "+
			"and do the servers' clocks agree with this one's?", secretsencrypt.DownAfter)
	}
	if len(down) > 0 {
		return fmt.Errorf("a server is down: %s. Every server must load each step of a key change: start it and run this again "+
			"(a server that has not reported for %s counts as gone)", strings.Join(down, ", "), secretsencrypt.GoneAfter)
	}
	return nil
}

// waitServers waits until every server's apiserver runs with st's configuration.
func (c Config) waitServers(ctx context.Context, st *secretsencrypt.State) error {
	cfg, err := st.Config()
	if err != nil {
		return err
	}
	want := secretsencrypt.Hash(cfg)
	deadline, said := time.Now().Add(c.Wait), time.Now()
	for {
		reports, err := secretsencrypt.ReadReports(ctx, c.KV)
		if err != nil {
			return err
		}
		var behind, down []string
		for _, r := range reports {
			age := time.Since(r.Updated)
			switch {
			case age > secretsencrypt.GoneAfter:
			case age > secretsencrypt.DownAfter:
				down = append(down, r.Server)
			case r.Loaded != want:
				behind = append(behind, r.Server)
			}
		}
		if len(down) > 0 {
			return fmt.Errorf("%s stopped reporting during the change: start it and run this command again to resume", strings.Join(down, ", "))
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s, %s still run with another encryption configuration (see their logs, 'secrets encryption:' lines); "+
				"run this command again to resume", c.Wait, strings.Join(behind, ", "))
		}
		if time.Since(said) >= 10*time.Second {
			c.say("waiting for %s to load the new configuration", strings.Join(behind, ", "))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// rewrite stores every Secret again, so the apiserver writes it under the
// active key (it rewrites a value read with any other key even when nothing
// changed), then reads the datastore back until every Secret is under it.
func (c Config) rewrite(ctx context.Context, st *secretsencrypt.State, step string) error {
	c.say("%s: rewriting every Secret", step)
	for pass := 1; ; pass++ {
		began := time.Now()
		n, err := c.rewriteAll(ctx)
		if err != nil {
			return err
		}
		s, err := secretsencrypt.Inspect(ctx, c.KV, st, nil)
		if err != nil {
			return err
		}
		if len(s.Unreadable) > 0 {
			return fmt.Errorf("%d Secrets are stored by a provider hakube's keys are not for: %s", len(s.Unreadable), strings.Join(s.Unreadable, "; "))
		}
		where := "in clear"
		if st.Enabled() {
			where = "under " + st.Active
		}
		c.say("%s: rewrote %d Secrets in %s; %d of %d stored %s", step, n, time.Since(began).Round(100*time.Millisecond),
			s.ByKey[under(st)], s.Secrets, where)
		if s.AllActive {
			return nil
		}
		if pass == 3 {
			return fmt.Errorf("after %d passes, %d Secrets are still not stored %s: run this command again", pass, s.Secrets-s.ByKey[under(st)], where)
		}
	}
}

func under(st *secretsencrypt.State) string {
	if st.Enabled() {
		return st.Active
	}
	return secretsencrypt.Clear
}

// rewriteAll updates every Secret unchanged, a page at a time. One changed
// or deleted meanwhile was written by a server with the active key already.
func (c Config) rewriteAll(ctx context.Context) (int, error) {
	secrets := c.Client.CoreV1().Secrets(metav1.NamespaceAll)
	work := make(chan corev1.Secret)
	var done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range max(c.Workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				_, err := c.Client.CoreV1().Secrets(s.Namespace).Update(ctx, &s, metav1.UpdateOptions{})
				switch {
				case err == nil:
					done.Add(1)
				case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
				default:
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("rewriting Secret %s/%s: %w", s.Namespace, s.Name, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	var listErr error
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := secrets.List(ctx, opts)
		if err != nil {
			listErr = fmt.Errorf("listing Secrets: %w", err)
			break
		}
		for _, s := range list.Items {
			work <- s
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			break
		}
	}
	close(work)
	wg.Wait()
	if listErr != nil {
		return int(done.Load()), listErr
	}
	return int(done.Load()), firstErr
}

func (c Config) say(format string, args ...any) {
	fmt.Fprintf(c.Out, format+"\n", args...)
}

func keyNames(st *secretsencrypt.State) []string {
	var out []string
	for _, k := range st.Keys {
		out = append(out, k.Name)
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
