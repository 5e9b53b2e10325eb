package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

const namespace = "default"

// object is what the writers know of one ConfigMap.
type object struct {
	createAcked, createUnknown bool
	deleteAcked, deleteUnknown bool
	// value is the last acknowledged one; maybe are later writes with unknown outcome.
	value string
	maybe []string
}

// k8sWriters create, update (with resourceVersion) and delete ConfigMaps.
type k8sWriters struct {
	label      string
	mu         sync.Mutex
	objects    map[string]*object
	ok, failed int
}

func (w *k8sWriters) run(ctx context.Context, id int, cs kubernetes.Interface) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	var mine []string
	for n := 0; ctx.Err() == nil; n++ {
		var err error
		switch r := rng.IntN(100); {
		case r < 40 || len(mine) == 0:
			name := fmt.Sprintf("%s-c%d-%d", w.label, id, n)
			mine = append(mine, name)
			err = w.create(cs, name, fmt.Sprint(n))
		case r < 90:
			err = w.update(cs, mine[rng.IntN(len(mine))], fmt.Sprint(n))
		default:
			i := rng.IntN(len(mine))
			err = w.delete(cs, mine[i])
			mine = append(mine[:i], mine[i+1:]...)
		}
		w.mu.Lock()
		if err != nil {
			w.failed++
		} else {
			w.ok++
		}
		w.mu.Unlock()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 3*time.Second)
}

func (w *k8sWriters) create(cs kubernetes.Interface, name, value string) error {
	w.mu.Lock()
	o := &object{}
	w.objects[name] = o
	w.mu.Unlock()
	ctx, cancel := opCtx()
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"robustness": w.label}}, Data: map[string]string{"v": value}}
	_, err := cs.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		o.createAcked, o.value = true, value
	} else {
		o.createUnknown, o.maybe = true, append(o.maybe, value)
	}
	return err
}

func (w *k8sWriters) update(cs kubernetes.Interface, name, value string) error {
	ctx, cancel := opCtx()
	defer cancel()
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cm.Data = map[string]string{"v": value}
	_, err = cs.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{})
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.objects[name]
	switch {
	case err == nil:
		o.value, o.maybe = value, nil
		o.createAcked = true
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// Definitely not applied.
	default:
		o.maybe = append(o.maybe, value)
	}
	return err
}

func (w *k8sWriters) delete(cs kubernetes.Interface, name string) error {
	ctx, cancel := opCtx()
	defer cancel()
	err := cs.CoreV1().ConfigMaps(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.objects[name]
	switch {
	case err == nil:
		o.deleteAcked = true
	case apierrors.IsNotFound(err):
		// The create's outcome was unknown and it had not applied yet; it
		// still may later (seen: a create that timed out during a leader
		// freeze was committed after this NotFound), so nothing is known.
		// An acknowledged create cannot be missing here: names are deleted
		// at most once, so the final check flags that case.
	default:
		o.deleteUnknown = true
	}
	return err
}

// checkFinal compares the listed ConfigMaps with what the writers were told:
// every acknowledged write is visible, nothing unknown appears.
func (w *k8sWriters) checkFinal(listed map[string]string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var v []string
	for name, o := range w.objects {
		got, exists := listed[name]
		switch {
		case o.deleteAcked:
			if exists {
				v = append(v, fmt.Sprintf("%s: delete was acknowledged but the object exists", name))
			}
		case o.createAcked && !o.deleteUnknown:
			if !exists {
				v = append(v, fmt.Sprintf("%s: acknowledged object is missing", name))
			} else if got != o.value && !contains(o.maybe, got) {
				v = append(v, fmt.Sprintf("%s: value %q, want the acknowledged %q or one of the unknown %v", name, got, o.value, o.maybe))
			}
		case exists && !contains(o.maybe, got) && got != o.value:
			v = append(v, fmt.Sprintf("%s: value %q was never written", name, got))
		}
	}
	for name := range listed {
		if _, ok := w.objects[name]; !ok {
			v = append(v, fmt.Sprintf("%s: exists but was never created", name))
		}
	}
	sort.Strings(v)
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// watcher follows the label's ConfigMaps through one server, resuming from the
// last resourceVersion after errors, and checks order and uniqueness as it goes.
type watcher struct {
	label      string
	mu         sync.Mutex
	lastRV     int64
	state      map[string]string // name -> value, from events
	events     int
	violations []string
	relists    int
}

func (wt *watcher) run(ctx context.Context, cs kubernetes.Interface, startRV string) {
	wt.state = map[string]string{}
	rv := startRV
	for ctx.Err() == nil {
		w, err := cs.CoreV1().ConfigMaps(namespace).Watch(ctx, metav1.ListOptions{
			LabelSelector: "robustness=" + wt.label, ResourceVersion: rv, AllowWatchBookmarks: true,
		})
		if err != nil {
			time.Sleep(300 * time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				if status, ok := ev.Object.(*metav1.Status); ok && status.Code == 410 {
					// The server no longer has that history (a restarted
					// apiserver's watch cache starts at its start): relist and
					// go on from the list, as informers do, and count it.
					if listRV, err := wt.relist(ctx, cs); err == nil {
						rv = listRV
					}
				}
				break
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(cm.ResourceVersion, 10, 64)
			wt.mu.Lock()
			if n <= wt.lastRV && ev.Type != watch.Bookmark {
				wt.violations = append(wt.violations, fmt.Sprintf("%s %s at resourceVersion %d after %d: out of order or repeated", ev.Type, cm.Name, n, wt.lastRV))
			}
			if n > wt.lastRV {
				wt.lastRV = n
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				wt.state[cm.Name] = cm.Data["v"]
				wt.events++
			case watch.Deleted:
				delete(wt.state, cm.Name)
				wt.events++
			}
			rv = cm.ResourceVersion
			wt.mu.Unlock()
		}
		w.Stop()
	}
}

// relist replaces the watcher's view with a fresh list and returns its resourceVersion.
func (wt *watcher) relist(ctx context.Context, cs kubernetes.Interface) (string, error) {
	l, err := cs.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{LabelSelector: "robustness=" + wt.label})
	if err != nil {
		return "", err
	}
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.relists++
	wt.state = map[string]string{}
	for _, cm := range l.Items {
		wt.state[cm.Name] = cm.Data["v"]
	}
	wt.lastRV, _ = strconv.ParseInt(l.ResourceVersion, 10, 64)
	return l.ResourceVersion, nil
}

// caughtUp reports whether the watcher has seen resourceVersion rv.
func (wt *watcher) caughtUp(rv int64) bool {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.lastRV >= rv
}

// gaps compares the watcher's view with the final list: any difference is an
// event it missed.
func (wt *watcher) gaps(listed map[string]string) []string {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	var v []string
	for name, val := range listed {
		if got, ok := wt.state[name]; !ok || got != val {
			v = append(v, fmt.Sprintf("watch missed a change of %s (saw %q, final %q)", name, got, val))
		}
	}
	for name := range wt.state {
		if _, ok := listed[name]; !ok {
			v = append(v, fmt.Sprintf("watch missed the deletion of %s", name))
		}
	}
	sort.Strings(v)
	return append(v, wt.violations...)
}
