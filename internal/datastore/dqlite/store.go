package dqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/k3s-io/kine/pkg/server"
	// The cgo SQLite driver kine uses too.
	_ "github.com/mattn/go-sqlite3"

	"github.com/hakube/hakube/internal/fsutil"
)

// The key/value history, one row per revision as in etcd's MVCC store: a
// write adds a row, a delete adds a tombstone, compaction removes what no
// reader at or after the compact revision can see.
const schema = `
CREATE TABLE IF NOT EXISTS kv (
	rev        INTEGER PRIMARY KEY,
	key        TEXT    NOT NULL,
	create_rev INTEGER NOT NULL,
	prev_rev   INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	deleted    INTEGER NOT NULL,
	lease      INTEGER NOT NULL,
	expires    INTEGER NOT NULL,
	value      BLOB
);
CREATE INDEX IF NOT EXISTS kv_key_rev ON kv (key, rev);
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires > 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`

const columns = `kv.rev, kv.key, kv.create_rev, kv.prev_rev, kv.version, kv.deleted, kv.lease, kv.value`

// store is the state machine's SQLite database. It is rebuilt from the Raft
// snapshot and log at every start, so it needs no fsync of its own: the Raft
// log is the durable copy.
type store struct {
	path string
	db   *sql.DB
	// The committed revision, compact revision and Raft index; the FSM
	// updates them under its lock once a transaction commits.
	rev, compact int64
	index        uint64
	// The statements of every applied write, prepared once: preparing them
	// for each entry took a tenth of a busy leader's CPU.
	latestStmt, insertStmt, metaStmt *sql.Stmt
}

const (
	latestQuery = `SELECT ` + columns + ` FROM kv WHERE key = ? AND rev <= ? ORDER BY rev DESC LIMIT 1`
	insertQuery = `INSERT INTO kv (rev, key, create_rev, prev_rev, version, deleted, lease, expires, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	metaQuery   = `INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`
)

func openStore(path string) (*store, error) {
	// It holds every Secret: 0600, not the umask's 0644 (SQLite gives its
	// -wal and -shm files the same).
	if err := fsutil.CreateOrChmod(path, 0o600); err != nil {
		return nil, err
	}
	// Writes run one at a time under the FSM's lock; in WAL mode readers use their
	// own snapshot, so more connections let reads run beside the writes.
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF&_busy_timeout=30000")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("SQLite schema in %s: %w", path, err)
	}
	s := &store{path: path, db: db}
	if err := s.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	for q, stmt := range map[string]**sql.Stmt{latestQuery: &s.latestStmt, insertQuery: &s.insertStmt, metaQuery: &s.metaStmt} {
		if *stmt, err = db.Prepare(q); err != nil {
			s.close()
			return nil, fmt.Errorf("SQLite statement in %s: %w", path, err)
		}
	}
	return s, nil
}

func (s *store) loadMeta() error {
	rows, err := s.db.Query(`SELECT name, value FROM meta`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return err
		}
		switch name {
		case "rev":
			s.rev = v
		case "compact":
			s.compact = v
		case "index":
			s.index = uint64(v)
		}
	}
	return rows.Err()
}

func (s *store) close() error {
	for _, stmt := range []*sql.Stmt{s.latestStmt, s.insertStmt, s.metaStmt} {
		if stmt != nil {
			stmt.Close()
		}
	}
	return s.db.Close()
}

// removeFiles deletes a database and its WAL files.
func removeFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

type row struct {
	rev, createRev, prevRev, version, lease int64
	key                                     string
	deleted                                 bool
	value                                   []byte
}

func (r *row) kv() *server.KeyValue {
	return &server.KeyValue{Key: r.key, Value: r.value, Version: r.version, CreateRevision: r.createRev, ModRevision: r.rev, Lease: r.lease}
}

type scanner interface{ Scan(...any) error }

func scanRow(sc scanner) (*row, error) {
	var r row
	var deleted int
	if err := sc.Scan(&r.rev, &r.key, &r.createRev, &r.prevRev, &r.version, &deleted, &r.lease, &r.value); err != nil {
		return nil, err
	}
	r.deleted = deleted != 0
	return &r, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// latest is key's newest row at or below rev (0: any), tombstones included;
// nil if there is none.
func (s *store) latest(ctx context.Context, key string, rev int64) (*row, error) {
	return latestRow(ctx, s.latestStmt, key, rev)
}

// latestRow runs latestQuery's stmt (the store's, or a transaction's).
func latestRow(ctx context.Context, stmt *sql.Stmt, key string, rev int64) (*row, error) {
	if rev <= 0 {
		rev = 1<<63 - 1
	}
	r, err := scanRow(stmt.QueryRowContext(ctx, key, rev))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// rangeWhere selects the newest row of each key in [key, end) at or below rev;
// an empty key and end select every key.
func rangeWhere(key, end string, rev int64) (string, []any) {
	if key == "" && end == "" {
		return `SELECT MAX(rev) FROM kv WHERE rev <= ? GROUP BY key`, []any{rev}
	}
	return `SELECT MAX(rev) FROM kv WHERE key >= ? AND key < ? AND rev <= ? GROUP BY key`, []any{key, end, rev}
}

func (s *store) list(ctx context.Context, key, end string, limit, rev int64, keysOnly bool) ([]*server.KeyValue, error) {
	sub, args := rangeWhere(key, end, rev)
	q := `SELECT ` + columns + ` FROM kv WHERE rev IN (` + sub + `) AND deleted = 0 ORDER BY key`
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*server.KeyValue
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		kv := r.kv()
		if keysOnly {
			kv.Value = nil
		}
		out = append(out, kv)
	}
	return out, rows.Err()
}

func (s *store) count(ctx context.Context, key, end string, rev int64) (int64, error) {
	sub, args := rangeWhere(key, end, rev)
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv WHERE rev IN (`+sub+`) AND deleted = 0`, args...).Scan(&n)
	return n, err
}

// events returns the changes after rev, oldest first, at most limit; or
// ErrCompacted if some of them are gone. One read transaction sees both the
// compact revision and the rows, so a compaction cannot slip in between.
func (s *store) events(ctx context.Context, after int64, limit int) ([]*server.Event, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var compact int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = 'compact'`).Scan(&compact); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if after < compact {
		return nil, server.ErrCompacted
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+columns+`, p.rev, p.create_rev, p.version, p.lease, p.value
		FROM kv LEFT JOIN kv AS p ON p.rev = kv.prev_rev WHERE kv.rev > ? ORDER BY kv.rev LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*server.Event
	for rows.Next() {
		var r row
		var deleted int
		var pRev, pCreate, pVersion, pLease sql.NullInt64
		var pValue []byte
		if err := rows.Scan(&r.rev, &r.key, &r.createRev, &r.prevRev, &r.version, &deleted, &r.lease, &r.value,
			&pRev, &pCreate, &pVersion, &pLease, &pValue); err != nil {
			return nil, err
		}
		r.deleted = deleted != 0
		var prev *row
		if pRev.Valid {
			prev = &row{key: r.key, rev: pRev.Int64, createRev: pCreate.Int64, version: pVersion.Int64, lease: pLease.Int64, value: pValue}
		}
		out = append(out, event(&r, prev))
	}
	return out, rows.Err()
}

// event is the watch event of row r, whose previous row for the key is prev.
func event(r, prev *row) *server.Event {
	e := &server.Event{KV: r.kv(), Delete: r.deleted, Create: !r.deleted && r.version == 1}
	if r.deleted {
		e.KV.Value, e.KV.Version, e.KV.CreateRevision = nil, 0, 0
	}
	if prev != nil && !e.Create {
		e.PrevKV = prev.kv()
	}
	return e
}

// applier applies commands in one write transaction. The revisions it moves
// become the store's only once the transaction commits (fsm.published).
type applier struct {
	s              *store
	ctx            context.Context
	tx             *sql.Tx
	latest, insert *sql.Stmt
	// rev and compact are the store's revision and compact revision with the
	// commands applied so far.
	rev, compact int64
}

func (s *store) begin() (*applier, error) {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &applier{s: s, ctx: ctx, tx: tx, latest: tx.StmtContext(ctx, s.latestStmt), insert: tx.StmtContext(ctx, s.insertStmt),
		rev: s.rev, compact: s.compact}, nil
}

// commit records the revision and the Raft index applied, and commits.
func (a *applier) commit(index uint64) error {
	if err := a.s.setMeta(a.ctx, a.tx, "rev", a.rev); err != nil {
		return err
	}
	if err := a.s.setMeta(a.ctx, a.tx, "index", int64(index)); err != nil {
		return err
	}
	return a.tx.Commit()
}

// rollback is a no-op after commit.
func (a *applier) rollback() { _ = a.tx.Rollback() }

// apply runs one command; it returns the result and the watch events it
// produced.
func (a *applier) apply(c *command) (*result, []*server.Event, error) {
	ctx := a.ctx
	var events []*server.Event
	insert := func(prev *row, r *row) error {
		r.rev = a.rev + 1
		expires := int64(0)
		if r.lease > 0 && !r.deleted {
			expires = c.Now + r.lease*int64(time.Second)
		}
		deleted := 0
		if r.deleted {
			deleted = 1
		}
		if _, err := a.insert.ExecContext(ctx, r.rev, r.key, r.createRev, r.prevRev, r.version, deleted, r.lease, expires, r.value); err != nil {
			return err
		}
		a.rev = r.rev
		events = append(events, event(r, prev))
		return nil
	}
	res := &result{OK: true}
	switch c.Op {
	case opCreate, opUpdate, opDelete, opPut:
		cur, err := latestRow(ctx, a.latest, c.Key, 0)
		if err != nil {
			return nil, nil, err
		}
		exists := cur != nil && !cur.deleted
		switch {
		case c.Op == opCreate && exists:
			res.OK, res.KV = false, cur.kv()
		case c.Op == opCreate, c.Op == opPut && !exists:
			prevRev := int64(0)
			if cur != nil {
				prevRev = cur.rev
			}
			r := &row{key: c.Key, createRev: a.rev + 1, prevRev: prevRev, version: 1, lease: c.Lease, value: c.Value}
			err = insert(nil, r)
		case c.Op == opPut:
			r := &row{key: c.Key, createRev: cur.createRev, prevRev: cur.rev, version: cur.version + 1, lease: c.Lease, value: c.Value}
			if err = insert(cur, r); err == nil {
				res.KV = cur.kv()
			}
		case !exists:
			// etcd: a delete without condition of a missing key succeeds and deletes nothing.
			res.OK = c.Op == opDelete && c.Rev == 0
		case c.Rev != 0 && cur.rev != c.Rev, c.Op == opUpdate && c.Rev == 0:
			res.OK, res.KV = false, cur.kv()
		case c.Op == opUpdate:
			r := &row{key: c.Key, createRev: cur.createRev, prevRev: cur.rev, version: cur.version + 1, lease: c.Lease, value: c.Value}
			if err = insert(cur, r); err == nil {
				res.KV = r.kv()
			}
		default:
			r := &row{key: c.Key, createRev: cur.createRev, prevRev: cur.rev, version: cur.version + 1, deleted: true}
			if err = insert(cur, r); err == nil {
				res.KV = cur.kv()
			}
		}
		if err != nil {
			return nil, nil, err
		}
	case opCompact:
		switch {
		case c.Rev > a.rev:
			res.OK, res.Err = false, errFuture
		case c.Rev <= a.compact:
			res.OK, res.Err = false, errCompacted
		default:
			// Rows superseded at or below the compact revision, and tombstones there, are gone for good.
			if _, err := a.tx.ExecContext(ctx, `DELETE FROM kv WHERE rev <= ?1 AND (deleted = 1 OR rev < (SELECT MAX(k.rev) FROM kv AS k WHERE k.key = kv.key AND k.rev <= ?1))`, c.Rev); err != nil {
				return nil, nil, err
			}
			if err := a.s.setMeta(ctx, a.tx, "compact", c.Rev); err != nil {
				return nil, nil, err
			}
			a.compact = c.Rev
		}
	case opBarrier:
		// No rows: only the index moves, which a read index may be.
	case opExpire:
		expired, err := a.s.expired(ctx, a.tx, c.Now)
		if err != nil {
			return nil, nil, err
		}
		for _, cur := range expired {
			r := &row{key: cur.key, createRev: cur.createRev, prevRev: cur.rev, version: cur.version + 1, deleted: true}
			if err := insert(cur, r); err != nil {
				return nil, nil, err
			}
		}
	}
	res.Rev = a.rev
	return res, events, nil
}

// bumpRevision moves the revision on by n and compacts at it: reads and
// watches at any older revision are refused as compacted. The next write
// takes the revision after it; the history keeps its own revisions.
func (s *store) bumpRevision(n int64) error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	rev := s.rev + n
	for _, name := range []string{"rev", "compact"} {
		if err := s.setMeta(ctx, tx, name, rev); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.rev, s.compact = rev, rev
	return nil
}

// expired lists the live keys whose lease ran out at now.
func (s *store) expired(ctx context.Context, q querier, now int64) ([]*row, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+columns+` FROM kv WHERE expires > 0 AND expires <= ? AND deleted = 0
		AND rev = (SELECT MAX(k.rev) FROM kv AS k WHERE k.key = kv.key) ORDER BY kv.rev`, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *store) setMeta(ctx context.Context, tx *sql.Tx, name string, v int64) error {
	_, err := tx.StmtContext(ctx, s.metaStmt).ExecContext(ctx, name, v)
	return err
}

// snapshotTo writes a consistent copy of the database to path (VACUUM INTO,
// SQLite's online copy, which also drops free pages).
func (s *store) snapshotTo(path string) error {
	if err := removeFiles(path); err != nil {
		return err
	}
	_, err := s.db.Exec(`VACUUM INTO ?`, path)
	return err
}

// size is the database's size in bytes, and the bytes of its free pages.
func (s *store) size(ctx context.Context) (total, free int64, err error) {
	var pages, freePages, pageSize int64
	for q, v := range map[string]*int64{`PRAGMA page_count`: &pages, `PRAGMA freelist_count`: &freePages, `PRAGMA page_size`: &pageSize} {
		if err := s.db.QueryRowContext(ctx, q).Scan(v); err != nil {
			return 0, 0, err
		}
	}
	return pages * pageSize, freePages * pageSize, nil
}
