package badgerjournal

import (
	"reflect"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

func sampleRecord() *record {
	return &record{
		Seq:    42,
		Stored: time.Unix(1700000000, 123456789),
		Size:   1 << 33,
		Body:   7,
		Chunks: 40000,
		Env: journal.Envelope{
			MailFrom: "s@example.org", QueueID: "4QAB", Received: time.Unix(-5, 1), AuthUser: "u\xff", Source: "milter",
			Recipients: []journal.Recipient{
				{Address: "a@example.com", Mailboxes: []string{"a", "b"}, Server: "dovecot", Mailer: "lmtp",
					Host: "[::1]:24", State: journal.StateRetrying, Attempts: 3, LastReply: "451 later", Updated: time.Unix(1, 2),
					NextAttempt: time.Unix(1e9, 3), Done: []string{"a"}},
				{Address: "x@elsewhere", State: journal.StateMTA},
			},
		},
		Summary: journal.Summary{From: "f", To: "t", Cc: "\x00", Subject: "s\xe4", Date: "d", MessageID: "<m>"},
		Boxes:   []boxUID{{"a", 1}, {"b", 1 << 31}},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []*record{sampleRecord(), {}} {
		got, err := decodeRecord(r.encode())
		if err != nil {
			t.Fatal(err)
		}
		// Times come back in the local zone; compare instants.
		if !got.Stored.Equal(r.Stored) || !got.Env.Received.Equal(r.Env.Received) {
			t.Errorf("times %v %v, want %v %v", got.Stored, got.Env.Received, r.Stored, r.Env.Received)
		}
		got.Stored, got.Env.Received = r.Stored, r.Env.Received
		for i := range got.Env.Recipients {
			if !got.Env.Recipients[i].Updated.Equal(r.Env.Recipients[i].Updated) {
				t.Errorf("recipient %d updated %v", i, got.Env.Recipients[i].Updated)
			}
			got.Env.Recipients[i].Updated = r.Env.Recipients[i].Updated
			if !got.Env.Recipients[i].NextAttempt.Equal(r.Env.Recipients[i].NextAttempt) {
				t.Errorf("recipient %d next attempt %v", i, got.Env.Recipients[i].NextAttempt)
			}
			got.Env.Recipients[i].NextAttempt = r.Env.Recipients[i].NextAttempt
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip\n got %+v\nwant %+v", got, r)
		}
	}
	if !(&record{}).Stored.IsZero() {
		t.Fatal("zero")
	}
	got, err := decodeRecord((&record{}).encode())
	if err != nil || !got.Stored.IsZero() || !got.Env.Received.IsZero() {
		t.Errorf("zero times do not survive: %v %v", got, err)
	}
}

// FuzzRecord feeds the record decoder arbitrary bytes (what a damaged disk could
// hand it): it must fail cleanly, and what it accepts must encode back to a
// record that decodes the same.
func FuzzRecord(f *testing.F) {
	f.Add(sampleRecord().encode())
	f.Add((&record{}).encode())
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		again, err := decodeRecord(r.encode())
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(again.encode(), r.encode()) {
			t.Fatal("record changes on a second round trip")
		}
	})
}
