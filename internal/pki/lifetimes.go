package pki

import (
	"fmt"
	"os"
	"time"
)

// ValidityEnv shortens the validity of every leaf certificate a server or an
// agent issues from now on, for tests and for clusters that want short-lived
// certificates: a Go duration of at least MinValidity, such as "5m" or "720h".
// Renewal follows it: a leaf is renewed when a third of its life is left.
const ValidityEnv = "HAKUBE_CERT_VALIDITY"

const (
	defaultValidity = 365 * 24 * time.Hour
	// MinValidity leaves a renewal, at a third of the life, time for the
	// handshakes that read the new file: 20 s at this bound.
	MinValidity = time.Minute
	// maxBackdate tolerates clock skew between servers.
	maxBackdate = time.Hour
	// maxCheckEvery bounds how late a running server or agent notices that a
	// certificate is due.
	maxCheckEvery = time.Hour
)

// Lifetimes says how long leaf certificates live and when they are renewed.
type Lifetimes struct {
	// Validity is a new leaf's life from now.
	Validity time.Duration
	// Window: a leaf that expires within it is due for renewal. 120 days of
	// a year's validity, so a monthly check sees it several times first.
	Window time.Duration
	// Backdate is how far before now a leaf is valid from: an hour, or a
	// tenth of a short validity.
	Backdate time.Duration
	// CheckEvery is how often a running server or agent looks for due leaves.
	CheckEvery time.Duration
}

// RenewWindow is Lifetimes.Window at the default validity.
const RenewWindow = 120 * 24 * time.Hour

// LeafLifetimes reads ValidityEnv: the defaults without it, an error naming
// the setting and the fix when it is malformed.
func LeafLifetimes() (Lifetimes, error) {
	v := defaultValidity
	if s := os.Getenv(ValidityEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < MinValidity {
			return Lifetimes{}, fmt.Errorf("%s=%q: give a duration of at least %s, such as 720h, or unset it for a year", ValidityEnv, s, MinValidity)
		}
		v = d
	}
	l := Lifetimes{Validity: v, Window: v / 365 * 120, Backdate: min(maxBackdate, v/10)}
	l.CheckEvery = min(maxCheckEvery, l.Window/8)
	return l, nil
}
