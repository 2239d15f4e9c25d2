package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/mailpit"
	bolt "go.etcd.io/bbolt"
)

// fastRetry keeps the tests quick: retries every 50-400 ms.
var fastRetry = OutboxConfig{RetryMin: 50 * time.Millisecond, RetryMax: 400 * time.Millisecond}

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func smtpFor(t *testing.T, mp *mailpit.Server) *SMTP {
	t.Helper()
	s, err := NewSMTP(SMTPConfig{URL: "smtp://" + mp.SMTPAddr, From: "pds@example.com", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runOutbox runs o until the returned stop is called.
func runOutbox(o *Outbox) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func waitPending(t *testing.T, o *Outbox, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := o.Pending(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want %d", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func msgTo(to, subject string) *Message {
	return &Message{To: to, Subject: subject, Text: "hello " + subject}
}

// TestOutboxDeliversAfterOutage: SMTP down when the mail is queued, the
// outbox retries, and the mail arrives once SMTP is back.
func TestOutboxDeliversAfterOutage(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{Stopped: true})
	db := openDB(t, filepath.Join(t.TempDir(), "pds.db"))
	defer db.Close()
	o, err := NewOutbox(db, smtpFor(t, mp), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	stop := runOutbox(o)
	defer stop()
	if err := o.Enqueue(context.Background(), msgTo("bob@example.com", "outage")); err != nil {
		t.Fatal(err)
	}
	// It is tried and fails while SMTP is down; it stays queued.
	deadline := time.Now().Add(5 * time.Second)
	for attempts(t, db) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the outbox did not retry")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitPending(t, o, 1, 0)
	mp.Start()
	got := mp.WaitMessage("bob@example.com", "outage", 5*time.Second)
	if strings.TrimSpace(got.Text) != "hello outage" {
		t.Errorf("text = %q", got.Text)
	}
	waitPending(t, o, 0, 2*time.Second)
	if n := len(mp.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
}

// attempts returns the attempts of the first queued message.
func attempts(t *testing.T, db *bolt.DB) int {
	t.Helper()
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		_, v := tx.Bucket(bucketOutbox).Cursor().First()
		if v == nil {
			return nil
		}
		var rec outboxRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		n = rec.Attempts
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOutboxDeliversAfterRestart: a mail queued while SMTP is down is sent
// by the next process that opens the database, once SMTP is back.
func TestOutboxDeliversAfterRestart(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{Stopped: true})
	path := filepath.Join(t.TempDir(), "pds.db")

	db := openDB(t, path)
	o, err := NewOutbox(db, smtpFor(t, mp), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	stop := runOutbox(o)
	for i := range 3 {
		if err := o.Enqueue(context.Background(), msgTo(fmt.Sprintf("u%d@example.com", i), "restart")); err != nil {
			t.Fatal(err)
		}
	}
	for attempts(t, db) < 1 {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	mp.Start()
	db = openDB(t, path)
	defer db.Close()
	// A long backoff: only the restart's first pass can deliver in time.
	o, err = NewOutbox(db, smtpFor(t, mp), OutboxConfig{RetryMin: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := o.Pending(context.Background()); n != 3 {
		t.Fatalf("pending after reopening = %d, want 3", n)
	}
	stop = runOutbox(o)
	defer stop()
	for i := range 3 {
		mp.WaitMessage(fmt.Sprintf("u%d@example.com", i), "restart", 5*time.Second)
	}
	waitPending(t, o, 0, 2*time.Second)
	if n := len(mp.Messages()); n != 3 {
		t.Fatalf("%d messages delivered, want 3", n)
	}
}

// TestOutboxDropsExpiredAndRefused: a mail whose token expired while SMTP
// was down is never sent, and a mail the server refuses for good is not
// retried.
func TestOutboxDropsExpiredAndRefused(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{Stopped: true, Args: []string{"--smtp-allowed-recipients", "@example\\.com$"}})
	db := openDB(t, filepath.Join(t.TempDir(), "pds.db"))
	defer db.Close()
	o, err := NewOutbox(db, smtpFor(t, mp), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	stop := runOutbox(o)
	defer stop()
	expiring := msgTo("late@example.com", "expiring")
	expiring.NotAfter = time.Now().Add(300 * time.Millisecond)
	if err := o.Enqueue(context.Background(), expiring); err != nil {
		t.Fatal(err)
	}
	waitPending(t, o, 0, 5*time.Second) // dropped at its NotAfter
	mp.Start()
	if err := o.Enqueue(context.Background(), msgTo("someone@elsewhere.org", "refused")); err != nil {
		t.Fatal(err)
	}
	waitPending(t, o, 0, 5*time.Second)
	if err := o.Enqueue(context.Background(), msgTo("ok@example.com", "fine")); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessage("ok@example.com", "fine", 5*time.Second)
	if msgs := mp.Messages(); len(msgs) != 1 {
		t.Fatalf("delivered %d messages, want only the last one", len(msgs))
	}
}

// TestOutboxEnqueueTxRollback: a mail queued in a transaction that rolls
// back is never sent.
func TestOutboxEnqueueTxRollback(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "pds.db"))
	defer db.Close()
	rec := &recordingSender{}
	o, err := NewOutbox(db, rec, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	stop := runOutbox(o)
	defer stop()
	boom := errors.New("boom")
	err = db.Update(func(tx *bolt.Tx) error {
		if err := o.EnqueueTx(tx, msgTo("a@example.com", "rolled back")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := o.Enqueue(context.Background(), msgTo("a@example.com", "committed")); err != nil {
		t.Fatal(err)
	}
	waitPending(t, o, 0, 2*time.Second)
	if got := rec.subjects(); len(got) != 1 || got[0] != "committed" {
		t.Fatalf("sent %v, want only the committed mail", got)
	}
	if err := o.Enqueue(context.Background(), &Message{To: "a@example.com", Subject: "x\r\nBcc: b@example.com", Text: "t"}); err == nil {
		t.Fatal("Enqueue accepted an injected header")
	}
}

func TestOutboxBackoff(t *testing.T) {
	o := &Outbox{cfg: OutboxConfig{RetryMin: 5 * time.Second, RetryMax: 10 * time.Minute}}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 320 * time.Second, 10 * time.Minute, 10 * time.Minute}
	for i, w := range want {
		if got := o.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := o.backoff(10_000); got != 10*time.Minute {
		t.Errorf("backoff(10000) = %v", got)
	}
}

type recordingSender struct {
	mu   sync.Mutex
	sent []string
}

func (r *recordingSender) Send(_ context.Context, m *Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, m.Subject)
	return nil
}

func (r *recordingSender) subjects() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sent...)
}
