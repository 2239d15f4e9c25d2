package mail

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sender delivers one message; *SMTP is the real one. An error wrapping
// ErrPermanent means retrying is pointless.
type Sender interface {
	Send(ctx context.Context, m *Message) error
}

// Retry defaults of the outbox.
const (
	DefaultRetryMin = 5 * time.Second
	DefaultRetryMax = 10 * time.Minute
	DefaultMaxAge   = 24 * time.Hour
	// outboxBatch is how many due messages one pass reads.
	outboxBatch = 32
)

// OutboxConfig configures an Outbox.
type OutboxConfig struct {
	// RetryMin is the wait after the first failed attempt; it doubles with
	// each further failure up to RetryMax. Zero means the defaults.
	RetryMin, RetryMax time.Duration
	// MaxAge is how long a message is retried before it is dropped; zero
	// means DefaultMaxAge. Messages with a NotAfter are dropped then.
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives delivery outcomes (never a body); nil discards them.
	Log *slog.Logger
}

var bucketOutbox = []byte("mail_outbox") // big-endian id → outboxRecord

// outboxRecord is a queued message and its delivery state.
type outboxRecord struct {
	Message     Message   `json:"message"`
	QueuedAt    time.Time `json:"queuedAt"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"nextAttempt"`
	LastError   string    `json:"lastError,omitempty"`
}

// Outbox is a durable queue of mail in its own bbolt bucket, and the loop
// (Run) that delivers it through a Sender with retries and exponential
// backoff. A message enqueued in a committed transaction is delivered at
// least once unless it expires (NotAfter, MaxAge) or the server refuses it
// for good: it survives an SMTP outage and a restart, since Run starts by
// trying everything still queued.
//
// The queued body holds the token it carries in plain text until delivery;
// that is why messages with a NotAfter are deleted once it has passed.
type Outbox struct {
	db     *bolt.DB
	sender Sender
	cfg    OutboxConfig
	log    *slog.Logger
	wake   chan struct{}
}

// NewOutbox returns the outbox over db, creating its bucket. The caller
// keeps ownership of db; sender must not be nil.
func NewOutbox(db *bolt.DB, sender Sender, cfg OutboxConfig) (*Outbox, error) {
	if sender == nil {
		return nil, errors.New("mail: NewOutbox without a sender")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketOutbox)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mail: creating bucket %s: %w", bucketOutbox, err)
	}
	return &Outbox{db: db, sender: sender, cfg: cfg, log: log, wake: make(chan struct{}, 1)}, nil
}

// Enqueue queues m in its own transaction.
func (o *Outbox) Enqueue(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return o.db.Update(func(tx *bolt.Tx) error { return o.EnqueueTx(tx, m) })
}

// EnqueueTx queues m in the caller's write transaction, so that the mail
// exists exactly when the change it announces (a token) does. Run is woken
// once the transaction commits.
func (o *Outbox) EnqueueTx(tx *bolt.Tx, m *Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	b := tx.Bucket(bucketOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return err
	}
	now := o.cfg.Now().UTC()
	rec := outboxRecord{Message: *m, QueuedAt: now, NextAttempt: now}
	data, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	if err := b.Put(binary.BigEndian.AppendUint64(nil, id), data); err != nil {
		return err
	}
	tx.OnCommit(o.notify)
	return nil
}

func (o *Outbox) notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Pending is the number of queued messages.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := o.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	return n, err
}

// Run delivers queued messages until ctx is done. Call it once per Outbox.
// It first tries everything queued (a restart is a good time to retry),
// then sleeps until the next message is due or a new one is enqueued.
// After a successful delivery every waiting message is tried at once: the
// server is evidently back.
func (o *Outbox) Run(ctx context.Context) {
	all := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next, delivered, err := o.pass(ctx, all)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			o.log.Error("mail outbox", "err", err)
			next = o.cfg.Now().Add(o.cfg.RetryMin)
		}
		all = delivered
		wait := time.Duration(-1)
		switch {
		case delivered:
			wait = 0
		case !next.IsZero():
			wait = max(next.Sub(o.cfg.Now()), 0)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		var tick <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-tick:
		}
	}
}

type queued struct {
	key []byte
	rec outboxRecord
}

// pass tries the due messages (every message if all) once. next is when
// the earliest remaining message is due (zero: none left), delivered
// whether any was sent in this pass.
func (o *Outbox) pass(ctx context.Context, all bool) (next time.Time, delivered bool, err error) {
	now := o.cfg.Now()
	var due []queued
	err = o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var rec outboxRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				// A record we cannot read is dropped below, not retried forever.
				due = append(due, queued{key: append([]byte(nil), k...)})
				return nil
			}
			if (all || !rec.NextAttempt.After(now)) && len(due) < outboxBatch {
				due = append(due, queued{key: append([]byte(nil), k...), rec: rec})
			} else if next.IsZero() || rec.NextAttempt.Before(next) {
				next = rec.NextAttempt
			}
			return nil
		})
	})
	if err != nil {
		return time.Time{}, false, err
	}
	for _, q := range due {
		if ctx.Err() != nil {
			return next, delivered, nil
		}
		n, sent, err := o.attempt(ctx, q)
		if err != nil {
			return next, delivered, err
		}
		delivered = delivered || sent
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next, delivered, nil
}

// attempt tries one message and records the outcome; next is its next
// attempt when it stays queued.
func (o *Outbox) attempt(ctx context.Context, q queued) (next time.Time, sent bool, err error) {
	var id uint64
	if len(q.key) == 8 {
		id = binary.BigEndian.Uint64(q.key)
	}
	now := o.cfg.Now()
	log := o.log.With("mail", id, "subject", q.rec.Message.Subject)
	switch {
	case q.rec.QueuedAt.IsZero():
		log.Error("mail dropped: unreadable outbox record")
		return time.Time{}, false, o.remove(q.key)
	case !q.rec.Message.NotAfter.IsZero() && !now.Before(q.rec.Message.NotAfter):
		log.Warn("mail dropped: it expired before it could be delivered", "attempts", q.rec.Attempts, "lastError", q.rec.LastError)
		return time.Time{}, false, o.remove(q.key)
	case now.Sub(q.rec.QueuedAt) > o.cfg.MaxAge:
		log.Error("mail dropped: not delivered in time", "attempts", q.rec.Attempts, "lastError", q.rec.LastError)
		return time.Time{}, false, o.remove(q.key)
	}
	sendErr := o.sender.Send(ctx, &q.rec.Message)
	if sendErr == nil {
		log.Info("mail sent", "attempts", q.rec.Attempts+1)
		return time.Time{}, true, o.remove(q.key)
	}
	if ctx.Err() != nil {
		return time.Time{}, false, nil // shutting down: the message stays queued as it was
	}
	if errors.Is(sendErr, ErrPermanent) {
		log.Error("mail dropped: the server refused it", "err", sendErr)
		return time.Time{}, false, o.remove(q.key)
	}
	q.rec.Attempts++
	q.rec.LastError = sendErr.Error()
	q.rec.NextAttempt = now.Add(o.backoff(q.rec.Attempts)).UTC()
	log.Warn("mail not sent; will retry", "attempts", q.rec.Attempts, "retryAt", q.rec.NextAttempt, "err", sendErr)
	data, err := json.Marshal(&q.rec)
	if err != nil {
		return time.Time{}, false, err
	}
	err = o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		if b.Get(q.key) == nil {
			return nil // removed meanwhile
		}
		return b.Put(q.key, data)
	})
	return q.rec.NextAttempt, false, err
}

// backoff is RetryMin·2^(attempts-1), at most RetryMax.
func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.cfg.RetryMin
	for i := 1; i < attempts && d < o.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, o.cfg.RetryMax)
}

func (o *Outbox) remove(key []byte) error {
	return o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOutbox).Delete(key) })
}
