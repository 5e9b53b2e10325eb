package cli

import (
	"github.com/spf13/pflag"

	"github.com/hakube/hakube/internal/snapshot"
)

// addS3Flags registers the S3 settings of snapshots, named as K3s names them.
func addS3Flags(f *pflag.FlagSet, c *snapshot.S3Config) {
	f.BoolVar(&c.Enabled, "etcd-s3", false, "copy snapshots to an S3-compatible store too")
	f.StringVar(&c.Endpoint, "etcd-s3-endpoint", c.Endpoint, "S3 endpoint, host[:port]")
	f.StringVar(&c.Bucket, "etcd-s3-bucket", "", "S3 bucket (must exist)")
	f.StringVar(&c.Folder, "etcd-s3-folder", "", "folder in the bucket")
	f.StringVar(&c.AccessKey, "etcd-s3-access-key", "", "S3 access key (default: AWS_ACCESS_KEY_ID, or an instance role)")
	f.StringVar(&c.SecretKey, "etcd-s3-secret-key", "", "S3 secret key (default: AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&c.Region, "etcd-s3-region", c.Region, "S3 region")
	f.StringVar(&c.EndpointCA, "etcd-s3-endpoint-ca", "", "CA file to verify the S3 endpoint")
	f.BoolVar(&c.Insecure, "etcd-s3-insecure", false, "use plain HTTP to the S3 endpoint")
	f.DurationVar(&c.Timeout, "etcd-s3-timeout", c.Timeout, "timeout of each S3 operation")
}
