package badgerjournal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// The records are encoded by hand, length-prefixed, because their strings are
// raw mail bytes (8-bit, invalid UTF-8, NUL) that JSON would mangle, and because
// a version byte in front lets a later format read old records.

// record is the stored form of one message (m key).
type record struct {
	Seq     uint64
	Stored  time.Time
	Size    int64
	Body    uint64 // body id: chunk keys c body(8) n(4)
	Chunks  int    // number of chunks, 0 for an empty message
	Env     journal.Envelope
	Summary journal.Summary
	Boxes   []boxUID // the mailboxes holding the message and its UID in each
}

type boxUID struct {
	Name string
	UID  uint32
}

func (r *record) entry(id journal.ID) journal.Entry {
	return journal.Entry{ID: id, Seq: r.Seq, Envelope: r.Env, Summary: r.Summary, Size: r.Size, Stored: r.Stored}
}

const recordVersion = 2

func (r *record) encode() []byte {
	var e encoder
	e.b = make([]byte, 0, 256)
	e.uvarint(recordVersion)
	e.uvarint(r.Seq)
	e.time(r.Stored)
	e.uvarint(uint64(r.Size))
	e.uvarint(r.Body)
	e.uvarint(uint64(r.Chunks))
	env := &r.Env
	e.str(env.MailFrom)
	e.str(env.QueueID)
	e.time(env.Received)
	e.str(env.AuthUser)
	e.str(env.Source)
	e.uvarint(uint64(len(env.Recipients)))
	for i := range env.Recipients {
		rc := &env.Recipients[i]
		e.str(rc.Address)
		e.uvarint(uint64(len(rc.Mailboxes)))
		for _, m := range rc.Mailboxes {
			e.str(m)
		}
		e.str(rc.Server)
		e.str(rc.Mailer)
		e.str(rc.Host)
		e.uvarint(uint64(rc.State))
		e.uvarint(uint64(rc.Attempts))
		e.str(rc.LastReply)
		e.time(rc.Updated)
		e.time(rc.NextAttempt)
		e.uvarint(uint64(len(rc.Done)))
		for _, m := range rc.Done {
			e.str(m)
		}
	}
	s := &r.Summary
	for _, v := range []string{s.From, s.To, s.Cc, s.Subject, s.Date, s.MessageID} {
		e.str(v)
	}
	e.uvarint(uint64(len(r.Boxes)))
	for _, b := range r.Boxes {
		e.str(b.Name)
		e.uvarint(uint64(b.UID))
	}
	return e.b
}

// recordHead is the start of a record: what reading the body needs.
type recordHead struct {
	Size   int64
	Body   uint64
	Chunks int
}

// decodeRecordHead decodes only the fields before the envelope, without
// allocating, for Open: it does not check the rest of the record (Get and
// Verify do).
func decodeRecordHead(b []byte) (recordHead, error) {
	d := decoder{b: b}
	if v := d.uvarint(); v != recordVersion {
		return recordHead{}, fmt.Errorf("message record version %d, want %d", v, recordVersion)
	}
	d.uvarint() // Seq
	d.time()    // Stored
	h := recordHead{Size: int64(d.uvarint()), Body: d.uvarint(), Chunks: d.int()}
	if d.err != nil {
		return recordHead{}, fmt.Errorf("decoding message record: %w", d.err)
	}
	return h, nil
}

func decodeRecord(b []byte) (*record, error) {
	d := decoder{b: b}
	if v := d.uvarint(); v != recordVersion {
		return nil, fmt.Errorf("message record version %d, want %d", v, recordVersion)
	}
	r := &record{}
	r.Seq = d.uvarint()
	r.Stored = d.time()
	r.Size = int64(d.uvarint())
	r.Body = d.uvarint()
	r.Chunks = d.int()
	env := &r.Env
	env.MailFrom = d.str()
	env.QueueID = d.str()
	env.Received = d.time()
	env.AuthUser = d.str()
	env.Source = d.str()
	if n := d.count(); n > 0 {
		env.Recipients = make([]journal.Recipient, n)
	}
	for i := range env.Recipients {
		rc := &env.Recipients[i]
		rc.Address = d.str()
		if n := d.count(); n > 0 {
			rc.Mailboxes = make([]string, n)
			for j := range rc.Mailboxes {
				rc.Mailboxes[j] = d.str()
			}
		}
		rc.Server = d.str()
		rc.Mailer = d.str()
		rc.Host = d.str()
		rc.State = journal.State(d.uvarint())
		rc.Attempts = d.int()
		rc.LastReply = d.str()
		rc.Updated = d.time()
		rc.NextAttempt = d.time()
		if n := d.count(); n > 0 {
			rc.Done = make([]string, n)
			for j := range rc.Done {
				rc.Done[j] = d.str()
			}
		}
	}
	s := &r.Summary
	for _, v := range []*string{&s.From, &s.To, &s.Cc, &s.Subject, &s.Date, &s.MessageID} {
		*v = d.str()
	}
	if n := d.count(); n > 0 {
		r.Boxes = make([]boxUID, n)
		for i := range r.Boxes {
			r.Boxes[i].Name = d.str()
			r.Boxes[i].UID = uint32(d.uvarint())
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("decoding message record: %w", d.err)
	}
	return r, nil
}

// mailbox is the stored state of a mailbox (b key). RFC 3501 §2.3.1.1: UIDs are
// strictly ascending and never reused while UIDVALIDITY stays; UIDNext only grows.
type mailbox struct {
	UIDValidity uint32
	UIDNext     uint32
	Messages    int64
}

func (m mailbox) encode() []byte {
	b := []byte{1}
	b = binary.BigEndian.AppendUint32(b, m.UIDValidity)
	b = binary.BigEndian.AppendUint32(b, m.UIDNext)
	return binary.AppendUvarint(b, uint64(m.Messages))
}

func decodeMailbox(b []byte) (mailbox, error) {
	if len(b) < 9 || b[0] != 1 {
		return mailbox{}, errors.New("bad mailbox record")
	}
	n, l := binary.Uvarint(b[9:])
	if l <= 0 || 9+l != len(b) {
		return mailbox{}, errors.New("bad mailbox record")
	}
	return mailbox{
		UIDValidity: binary.BigEndian.Uint32(b[1:]),
		UIDNext:     binary.BigEndian.Uint32(b[5:]),
		Messages:    int64(n),
	}, nil
}

// item is the value of a u key: what a listing needs without reading the message
// record.
type item struct {
	ID       journal.ID
	Received time.Time
	Size     int64
	// Body and Chunks repeat the record's, so that OpenItem reads the body
	// without the record; items written by format 2 have neither (36 bytes).
	Body   uint64
	Chunks uint32
}

const (
	itemLenOld = 36
	itemLen    = 48
)

func (it item) encode() []byte {
	b := append(make([]byte, 0, itemLen), it.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(it.Received.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(it.Received.Nanosecond()))
	b = binary.BigEndian.AppendUint64(b, uint64(it.Size))
	b = binary.BigEndian.AppendUint64(b, it.Body)
	return binary.BigEndian.AppendUint32(b, it.Chunks)
}

func decodeItem(b []byte) (item, error) {
	if len(b) != itemLen && len(b) != itemLenOld {
		return item{}, errors.New("bad mailbox item")
	}
	var it item
	copy(it.ID[:], b)
	it.Received = time.Unix(int64(binary.BigEndian.Uint64(b[16:])), int64(binary.BigEndian.Uint32(b[24:])))
	it.Size = int64(binary.BigEndian.Uint64(b[28:]))
	if len(b) == itemLen {
		it.Body = binary.BigEndian.Uint64(b[36:])
		it.Chunks = binary.BigEndian.Uint32(b[44:])
	}
	return it, nil
}

// stats are the journal-wide counters (_stats key), kept in step with every
// append and removal so that Stats does not scan.
type stats struct {
	Messages  int64
	BytesRaw  int64
	Mailboxes int64
}

func (s stats) encode() []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(s.Messages))
	b = binary.AppendUvarint(b, uint64(s.BytesRaw))
	return binary.AppendUvarint(b, uint64(s.Mailboxes))
}

func decodeStats(b []byte) (stats, error) {
	d := decoder{b: b}
	if d.uvarint() != 1 {
		return stats{}, errors.New("bad stats record")
	}
	s := stats{Messages: int64(d.uvarint()), BytesRaw: int64(d.uvarint()), Mailboxes: int64(d.uvarint())}
	if d.err != nil || len(d.b) != 0 {
		return stats{}, errors.New("bad stats record")
	}
	return s, nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, errors.New("bad counter")
	}
	return binary.BigEndian.Uint64(b), nil
}

func decodeID(b []byte) (journal.ID, error) {
	var id journal.ID
	if len(b) != len(id) {
		return id, errors.New("bad message id in index")
	}
	copy(id[:], b)
	return id, nil
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }

// time keeps the instant (seconds and nanoseconds); the zero time survives.
func (e *encoder) time(t time.Time) {
	e.varint(t.Unix())
	e.uvarint(uint64(t.Nanosecond()))
}

// decoder reads what encoder wrote; the first error sticks and later reads
// return zero values, so decoding code checks once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errors.New("record truncated")
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must fit what is left of the record, so that a
// corrupt record cannot make the decoder allocate gigabytes.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(v)
}

// int reads a number that must fit an int32, so that a corrupt record cannot
// make a reader loop over billions of chunks.
func (d *decoder) int() int {
	v := d.uvarint()
	if v > 1<<31-1 {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.count()
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil || nsec >= 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec))
}
