package snapshot

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hakube/hakube/internal/pki"
)

// S3Config is an S3-compatible store that snapshots are copied to.
type S3Config struct {
	Enabled bool
	// Endpoint is host[:port]; Insecure uses plain HTTP to it.
	Endpoint   string
	Bucket     string
	Folder     string
	AccessKey  string
	SecretKey  string
	Region     string
	EndpointCA string
	Insecure   bool
	Timeout    time.Duration
}

// NewS3Config returns the defaults.
func NewS3Config() S3Config {
	return S3Config{Endpoint: "s3.amazonaws.com", Region: "us-east-1", Timeout: 5 * time.Minute}
}

// Validate checks the settings without reaching the store.
func (c S3Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("--etcd-s3 needs --etcd-s3-bucket (an existing bucket)"))
	}
	if c.Endpoint == "" || strings.Contains(c.Endpoint, "/") {
		errs = append(errs, fmt.Errorf("--etcd-s3-endpoint %q: give host[:port], without a scheme (plain HTTP is --etcd-s3-insecure)", c.Endpoint))
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		errs = append(errs, errors.New("--etcd-s3-access-key and --etcd-s3-secret-key go together (or give neither, to use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role)"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--etcd-s3-timeout %s must be positive", c.Timeout))
	}
	if c.EndpointCA != "" {
		if _, err := pki.PoolFromFile(c.EndpointCA); err != nil {
			errs = append(errs, fmt.Errorf("--etcd-s3-endpoint-ca: %w", err))
		}
	}
	return errors.Join(errs...)
}

// S3 is a connected store.
type S3 struct {
	cfg S3Config
	c   *minio.Client
}

// NewS3 connects to the store and checks that the bucket exists.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.IAM{}})
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.EndpointCA != "" {
		pool, err := pki.PoolFromFile(cfg.EndpointCA)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: tr})
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %s: %w", cfg.Endpoint, err)
	}
	s := &S3{cfg: cfg, c: c}
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("reaching S3 bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("S3 bucket %s does not exist at %s; create it first", cfg.Bucket, cfg.Endpoint)
	}
	return s, nil
}

func (s *S3) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.Timeout)
}

func (s *S3) key(name string) string     { return path.Join(s.cfg.Folder, name) }
func (s *S3) metaKey(name string) string { return path.Join(s.cfg.Folder, ".metadata", name+".json") }

// Location is where a snapshot of that name is in the store.
func (s *S3) Location(name string) string {
	return "s3://" + s.cfg.Bucket + "/" + s.key(name)
}

// Upload copies the local snapshot m of dir, and its metadata, to the store.
func (s *S3) Upload(ctx context.Context, dir Dir, m Meta) (Meta, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	if _, err := s.c.FPutObject(ctx, s.cfg.Bucket, s.key(m.Name), dir.file(m.Name), minio.PutObjectOptions{}); err != nil {
		return Meta{}, fmt.Errorf("uploading snapshot %s: %w", m.Name, err)
	}
	m.Location = s.Location(m.Name)
	b, _ := json.MarshalIndent(m, "", "  ")
	if _, err := s.c.PutObject(ctx, s.cfg.Bucket, s.metaKey(m.Name), bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
		return Meta{}, fmt.Errorf("uploading the metadata of snapshot %s: %w", m.Name, err)
	}
	return m, nil
}

// List returns the store's snapshots, oldest first.
func (s *S3) List(ctx context.Context) ([]Meta, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	prefix := ""
	if s.cfg.Folder != "" {
		prefix = strings.TrimSuffix(s.cfg.Folder, "/") + "/"
	}
	var out []Meta
	for o := range s.c.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix}) {
		if o.Err != nil {
			return nil, fmt.Errorf("listing S3 bucket %s: %w", s.cfg.Bucket, o.Err)
		}
		name := strings.TrimPrefix(o.Key, prefix)
		if name == "" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			continue
		}
		m := Meta{Name: name, Size: o.Size, Created: o.LastModified.UTC(), Compressed: strings.HasSuffix(name, ".gz")}
		if b, err := s.get(ctx, s.metaKey(name)); err == nil {
			_ = json.Unmarshal(b, &m)
		}
		m.Location = s.Location(name)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func (s *S3) get(ctx context.Context, key string) ([]byte, error) {
	o, err := s.c.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

// Download copies snapshot name and its metadata from the store into dir,
// where it can be checked like any local snapshot, and returns its path.
func (s *S3) Download(ctx context.Context, name string, dir Dir) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("invalid snapshot name %q", name)
	}
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	if err := os.MkdirAll(filepath.Dir(dir.meta(name)), 0o700); err != nil {
		return "", err
	}
	meta, err := s.get(ctx, s.metaKey(name))
	if err != nil {
		return "", fmt.Errorf("snapshot %s in S3 bucket %s: %w", name, s.cfg.Bucket, err)
	}
	tmp := dir.file("." + name + ".downloading")
	if err := s.c.FGetObject(ctx, s.cfg.Bucket, s.key(name), tmp, minio.GetObjectOptions{}); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("downloading snapshot %s from S3 bucket %s: %w", name, s.cfg.Bucket, err)
	}
	if err := os.WriteFile(dir.meta(name), meta, 0o600); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir.file(name)); err != nil {
		return "", err
	}
	return dir.file(name), nil
}

// Delete removes snapshots and their metadata from the store.
func (s *S3) Delete(ctx context.Context, names ...string) error {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	var errs []error
	for _, name := range names {
		for _, k := range []string{s.key(name), s.metaKey(name)} {
			if err := s.c.RemoveObject(ctx, s.cfg.Bucket, k, minio.RemoveObjectOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("deleting %s from S3: %w", k, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Prune deletes all but the newest keep snapshots whose names start with
// prefix (this node's scheduled ones), as the local retention does.
func (s *S3) Prune(ctx context.Context, prefix string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("retention %d: keep at least 1 snapshot", keep)
	}
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var mine []string
	for _, m := range all {
		if strings.HasPrefix(m.Name, prefix) {
			mine = append(mine, m.Name)
		}
	}
	if len(mine) <= keep {
		return nil, nil
	}
	gone := mine[:len(mine)-keep]
	return gone, s.Delete(ctx, gone...)
}
