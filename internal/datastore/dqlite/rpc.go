package dqlite

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// The members' RPCs, on the peer port. Requests that need the leader are
// proxied to it by whichever member receives them.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apply", n.onLeader(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxCommand))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c, err := unmarshalCommand(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := n.applyLocal(c, 10*time.Second)
		if err != nil {
			rpcError(w, err)
			return
		}
		writeJSON(w, res)
	}))
	mux.HandleFunc("GET /readindex", n.onLeader(func(w http.ResponseWriter, r *http.Request) {
		idx, err := n.readIndex(r.Context())
		if err != nil {
			rpcError(w, err)
			return
		}
		writeJSON(w, indexResponse{Index: idx})
	}))
	mux.HandleFunc("POST /join", n.onLeader(func(w http.ResponseWriter, r *http.Request) {
		m, ok := decodeMember(w, r, true)
		if !ok {
			return
		}
		if err := n.addNonvoter(m); err != nil {
			rpcError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /promote", n.onLeader(func(w http.ResponseWriter, r *http.Request) {
		m, ok := decodeMember(w, r, false)
		if !ok {
			return
		}
		// Only a member is promoted, and only in the configuration it was
		// found in: a promotion racing a removal would add it back.
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			rpcError(w, err)
			return
		}
		if !slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return s.ID == raft.ServerID(m.ID) }) {
			http.Error(w, m.ID+" is not a member of the cluster (it was removed)", http.StatusConflict)
			return
		}
		if err := n.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.Address), f.Index(), 30*time.Second).Error(); err != nil {
			rpcError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /remove", n.onLeader(func(w http.ResponseWriter, r *http.Request) {
		m, ok := decodeMember(w, r, false)
		if !ok {
			return
		}
		if err := n.removeMember(r.Context(), m.ID); err != nil {
			rpcError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /removed", func(w http.ResponseWriter, r *http.Request) {
		// Not taken on trust: the member asks the leader itself.
		n.checkRemoved()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.status())
	})
	mux.HandleFunc("GET /snapshot", func(w http.ResponseWriter, r *http.Request) {
		n.catchUp(r.Context())
		if !n.Voter() {
			http.Error(w, "this member is not a voter yet (it is still catching up): take the snapshot on a voter", http.StatusConflict)
			return
		}
		path := filepath.Join(n.cfg.Dir, fmt.Sprintf("backup-%d.db", time.Now().UnixNano()))
		defer func() { _ = removeFiles(path) }()
		if err := n.fsm.read(func(st *store) error { return st.snapshotTo(path) }); err != nil {
			rpcError(w, err)
			return
		}
		f, err := os.Open(path)
		if err != nil {
			rpcError(w, err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/vnd.sqlite3")
		_, _ = io.Copy(w, f)
	})
	mux.HandleFunc("POST /vacuum", n.handleVacuum)
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, r *http.Request) {
		ms, err := n.Members(r.Context())
		if err != nil {
			rpcError(w, err)
			return
		}
		writeJSON(w, ms)
	})
	return mux
}

// decodeMember reads the member a membership request names; it answers 400
// itself when the ID (or, if needed, the address) is missing.
func decodeMember(w http.ResponseWriter, r *http.Request, needAddress bool) (Member, bool) {
	var m Member
	err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&m)
	switch {
	case needAddress && (err != nil || m.ID == "" || m.Address == ""):
		http.Error(w, "a member ID and address are required", http.StatusBadRequest)
	case err != nil || m.ID == "":
		http.Error(w, "a member ID is required", http.StatusBadRequest)
	default:
		return m, true
	}
	return Member{}, false
}

// maxCommand bounds a forwarded write: etcd's default request limit plus room.
const maxCommand = 3 << 20

type indexResponse struct {
	Index uint64 `json:"index"`
}

// statusConflict tells a forwarder that the member it reached is not the
// leader (any more): nothing was done, the request may be retried.
const statusNotLeader = http.StatusMisdirectedRequest

// onLeader runs h on the leader; other members proxy the request to it once.
func (n *Node) onLeader(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n.raft.State() == raft.Leader {
			h(w, r)
			return
		}
		if r.Header.Get("Hakube-Forwarded") != "" {
			http.Error(w, "not the leader", statusNotLeader)
			return
		}
		addr, _ := n.raft.LeaderWithID()
		if addr == "" {
			http.Error(w, "no leader", statusNotLeader)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxCommand))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "https://"+string(addr)+r.URL.Path, bytes.NewReader(body))
		req.Header.Set("Hakube-Forwarded", "1")
		resp, err := n.http.Do(req)
		if err != nil {
			// The leader this member knows is gone: an election is due.
			http.Error(w, "forwarding to the leader: "+err.Error(), statusNotLeader)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}
}

func rpcError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrNotLeader) || errors.Is(err, errNoLeaderYet) {
		code = statusNotLeader
	}
	http.Error(w, err.Error(), code)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// rpcClient is an HTTP client whose connections are the mux's RPC kind.
func rpcClient(client *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialPeer(ctx, client, addr, kindRPC)
		},
	}}
}

func (n *Node) call(ctx context.Context, addr, method, path string, body []byte, out any) error {
	return callRPC(ctx, n.http, addr, method, path, body, out)
}

// callRPC sends an RPC to addr and decodes a JSON answer into out (if not
// nil). A "not the leader" answer is errNoLeaderYet: nothing happened, retry.
func callRPC(ctx context.Context, hc *http.Client, addr, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	var de *dialError
	if errors.As(err, &de) {
		return fmt.Errorf("%w: %v", errNoLeaderYet, err)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxCommand))
	switch {
	case resp.StatusCode == statusNotLeader:
		return fmt.Errorf("%w: %s", errNoLeaderYet, bytes.TrimSpace(b))
	case resp.StatusCode == http.StatusBadRequest:
		return fmt.Errorf("%w: %s %s on %s: %s", errRefused, method, path, addr, bytes.TrimSpace(b))
	case resp.StatusCode >= 300:
		return fmt.Errorf("%s %s on %s: %s", method, path, addr, bytes.TrimSpace(b))
	case out != nil:
		return json.Unmarshal(b, out)
	}
	return nil
}

// errRefused is a request that a member refused as malformed: nothing was
// done. A member of an older version refuses a command it does not know.
var errRefused = errors.New("dqlite: request refused")

// leaderAddr is the leader's peer address, or errNoLeaderYet.
func (n *Node) leaderAddr() (string, error) {
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return "", errNoLeaderYet
	}
	return string(addr), nil
}

func (n *Node) forwardApply(ctx context.Context, c *command) (*result, error) {
	addr, err := n.leaderAddr()
	if err != nil {
		return nil, err
	}
	var res result
	if err := n.call(ctx, addr, "POST", "/apply", c.marshal(), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func (n *Node) forwardReadIndex(ctx context.Context) (uint64, error) {
	addr, err := n.leaderAddr()
	if err != nil {
		return 0, err
	}
	var ir indexResponse
	if err := n.call(ctx, addr, "GET", "/readindex", nil, &ir); err != nil {
		return 0, err
	}
	return ir.Index, nil
}
