// Package s3store keeps blob bytes in an S3-compatible object store (AWS
// S3, R2, MinIO, versitygw, ...), for the blobstore. Objects are written
// from a seekable local file, so an upload never holds a whole blob in
// memory, and read back with ranged GETs, so getBlob streams and can answer
// Range requests.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Config is the reference PDS's PDS_BLOBSTORE_S3_* settings.
type Config struct {
	Bucket          string
	Region          string // default us-east-1
	Endpoint        string // empty: AWS
	ForcePathStyle  bool
	AccessKeyID     string
	SecretAccessKey string
	// UploadTimeout bounds one object upload (default 20 s, the
	// reference's PDS_BLOBSTORE_S3_UPLOAD_TIMEOUT_MS).
	UploadTimeout time.Duration
	// HTTP sends the requests (nil: a default client).
	HTTP *http.Client
}

// Store is a bucket. Its methods are safe for concurrent use.
type Store struct {
	cfg Config
	c   *s3.Client
}

// New returns a store over cfg.Bucket; it does not contact the server.
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: no bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.UploadTimeout <= 0 {
		cfg.UploadTimeout = 20 * time.Second
	}
	opts := s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.ForcePathStyle,
		// Checksums only where S3 requires them: other S3-compatible
		// servers do not all accept the newer trailing checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.AccessKeyID != "" {
		opts.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTP != nil {
		opts.HTTPClient = cfg.HTTP
	}
	return &Store{cfg: cfg, c: s3.New(opts)}, nil
}

// CreateBucket makes the bucket if it does not exist (tests, first setup).
func (s *Store) CreateBucket(ctx context.Context) error {
	_, err := s.c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("s3store: creating bucket %s: %w", s.cfg.Bucket, err)
	}
	return nil
}

// Put stores size bytes read from r under key.
func (s *Store) Put(ctx context.Context, key string, r io.ReadSeeker, size int64, contentType string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.UploadTimeout)
	defer cancel()
	in := &s3.PutObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), Body: r, ContentLength: aws.Int64(size)}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	if _, err := s.c.PutObject(ctx, in); err != nil {
		return fmt.Errorf("s3store: put %s: %w", key, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}); err != nil && !isNotFound(err) {
		return fmt.Errorf("s3store: delete %s: %w", key, err)
	}
	return nil
}

// Get returns a reader of the size bytes under key; reading a missing
// object fails with an error wrapping os.ErrNotExist. Nothing is fetched
// until the first Read; Seek drops the current response and the next Read
// asks for the rest from the new offset.
func (s *Store) Get(ctx context.Context, key string, size int64) (io.ReadSeekCloser, error) {
	return &object{ctx: ctx, s: s, key: key, size: size}, nil
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var api smithy.APIError
	return errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound"))
}

type object struct {
	ctx  context.Context
	s    *Store
	key  string
	size int64
	off  int64
	body io.ReadCloser
}

func (o *object) Read(p []byte) (int, error) {
	if o.off >= o.size {
		return 0, io.EOF
	}
	if o.body == nil {
		out, err := o.s.c.GetObject(o.ctx, &s3.GetObjectInput{
			Bucket: aws.String(o.s.cfg.Bucket), Key: aws.String(o.key),
			Range: aws.String(fmt.Sprintf("bytes=%d-", o.off)),
		})
		if err != nil {
			if isNotFound(err) {
				return 0, fmt.Errorf("s3store: %s: %w", o.key, os.ErrNotExist)
			}
			return 0, fmt.Errorf("s3store: get %s: %w", o.key, err)
		}
		o.body = out.Body
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	if errors.Is(err, io.EOF) && o.off < o.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (o *object) Seek(offset int64, whence int) (int64, error) {
	var off int64
	switch whence {
	case io.SeekStart:
		off = offset
	case io.SeekCurrent:
		off = o.off + offset
	case io.SeekEnd:
		off = o.size + offset
	default:
		return 0, errors.New("s3store: bad whence")
	}
	if off < 0 {
		return 0, errors.New("s3store: negative offset")
	}
	if off != o.off && o.body != nil {
		o.body.Close()
		o.body = nil
	}
	o.off = off
	return off, nil
}

func (o *object) Close() error {
	if o.body != nil {
		return o.body.Close()
	}
	return nil
}
