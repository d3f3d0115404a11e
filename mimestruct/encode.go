package mimestruct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The stored form is hand-encoded, length-prefixed, after a version byte: a
// later version of the parser may describe messages differently, and a reader
// must know which it has (ErrVersion tells it to parse the message again).
// Sizes are not stored: Size is End-BodyStart.
const encodingVersion = 1

// ErrVersion is returned by UnmarshalBinary for data of another encoding
// version; the caller parses the message again.
var ErrVersion = errors.New("mimestruct: unknown encoding version")

// MarshalBinary encodes the Info for storage. It implements
// encoding.BinaryMarshaler.
func (i *Info) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 256)}
	e.b = append(e.b, encodingVersion)
	e.envelope(&i.Envelope)
	e.part(&i.Body)
	return e.b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded. It implements
// encoding.BinaryUnmarshaler. Corrupt data is an error, never a panic.
func (i *Info) UnmarshalBinary(b []byte) error {
	if len(b) == 0 {
		return errors.New("mimestruct: decoding structure: empty")
	}
	if b[0] != encodingVersion {
		return fmt.Errorf("%w %d", ErrVersion, b[0])
	}
	d := decoder{b: b[1:]}
	var out Info
	d.envelope(&out.Envelope)
	d.part(&out.Body, 1)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the structure", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("mimestruct: decoding structure: %w", d.err)
	}
	*i = out
	return nil
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }

func (e *encoder) strs(l []string) {
	e.uvarint(uint64(len(l)))
	for _, s := range l {
		e.str(s)
	}
}

func (e *encoder) params(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(m[k])
	}
}

func (e *encoder) addrs(l []Address) {
	e.uvarint(uint64(len(l)))
	for _, a := range l {
		e.str(a.Name)
		e.str(a.Mailbox)
		e.str(a.Host)
	}
}

// Envelope flags.
const (
	envDate          = 1 << iota // a date follows
	envSenderIsFrom              // Sender equals From and is not stored
	envReplyToIsFrom             // Reply-To equals From and is not stored
)

func (e *encoder) envelope(env *Envelope) {
	var flags uint64
	if !env.Date.IsZero() {
		flags |= envDate
	}
	if slices.Equal(env.Sender, env.From) {
		flags |= envSenderIsFrom
	}
	if slices.Equal(env.ReplyTo, env.From) {
		flags |= envReplyToIsFrom
	}
	e.uvarint(flags)
	if flags&envDate != 0 {
		// The instant and the zone offset: IMAP shows the date in the
		// sender's zone.
		_, off := env.Date.Zone()
		e.varint(env.Date.Unix())
		e.uvarint(uint64(env.Date.Nanosecond()))
		e.varint(int64(off))
	}
	e.str(env.Subject)
	e.addrs(env.From)
	if flags&envSenderIsFrom == 0 {
		e.addrs(env.Sender)
	}
	if flags&envReplyToIsFrom == 0 {
		e.addrs(env.ReplyTo)
	}
	e.addrs(env.To)
	e.addrs(env.Cc)
	e.addrs(env.Bcc)
	e.strs(env.InReplyTo)
	e.str(env.MessageID)
}

func (e *encoder) part(p *Part) {
	e.str(p.Type)
	e.str(p.Subtype)
	e.params(p.Params)
	e.str(p.ID)
	e.str(p.Description)
	e.str(p.Encoding)
	e.uvarint(uint64(p.Lines))
	e.str(p.MD5)
	e.str(p.Disposition)
	e.params(p.DispositionParams)
	e.strs(p.Language)
	e.str(p.Location)
	e.uvarint(uint64(p.HeaderStart))
	e.uvarint(uint64(p.BodyStart - p.HeaderStart))
	e.uvarint(uint64(p.End - p.BodyStart))
	if p.Message != nil {
		e.uvarint(1)
		e.envelope(p.Message)
	} else {
		e.uvarint(0)
	}
	e.uvarint(uint64(len(p.Children)))
	for i := range p.Children {
		e.part(&p.Children[i])
	}
}

// decoder reads what encoder wrote; the first error sticks and later reads
// return zero values.
type decoder struct {
	b     []byte
	err   error
	parts int // parts decoded or allocated so far
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of items that must fit the bytes left, each taking
// size bytes at least, so that corrupt data cannot make the decoder allocate
// more than a small multiple of its length.
func (d *decoder) count(size int) int {
	v := d.uvarint()
	if v > uint64(len(d.b)/size) {
		d.fail("count %d beyond the data", v)
		return 0
	}
	return int(v)
}

// maxOffset bounds offsets and counts, far above any message the journal
// takes, so that sums of them cannot overflow.
const maxOffset = 1 << 48

// offset reads a non-negative int64 up to maxOffset.
func (d *decoder) offset() int64 {
	v := d.uvarint()
	if v > maxOffset {
		d.fail("offset %d out of range", v)
		return 0
	}
	return int64(v)
}

func (d *decoder) str() string {
	n := d.count(1)
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) strs() []string {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.str()
	}
	return l
}

func (d *decoder) params() map[string]string {
	n := d.count(2)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k := d.str()
		m[k] = d.str()
	}
	return m
}

func (d *decoder) addrs() []Address {
	n := d.count(3)
	if n == 0 {
		return nil
	}
	l := make([]Address, n)
	for i := range l {
		l[i] = Address{Name: d.str(), Mailbox: d.str(), Host: d.str()}
	}
	return l
}

func (d *decoder) envelope(env *Envelope) {
	flags := d.uvarint()
	if flags&envDate != 0 {
		sec, nsec, off := d.varint(), d.uvarint(), d.varint()
		if nsec >= 1e9 || off < -24*3600 || off > 24*3600 {
			d.fail("bad date")
			return
		}
		env.Date = time.Unix(sec, int64(nsec)).In(time.FixedZone("", int(off)))
	}
	env.Subject = d.str()
	env.From = d.addrs()
	if flags&envSenderIsFrom != 0 {
		env.Sender = slices.Clone(env.From)
	} else {
		env.Sender = d.addrs()
	}
	if flags&envReplyToIsFrom != 0 {
		env.ReplyTo = slices.Clone(env.From)
	} else {
		env.ReplyTo = d.addrs()
	}
	env.To = d.addrs()
	env.Cc = d.addrs()
	env.Bcc = d.addrs()
	env.InReplyTo = d.strs()
	env.MessageID = d.str()
}

func (d *decoder) part(p *Part, depth int) {
	if depth > MaxDepth+1 {
		d.fail("parts nested deeper than %d", MaxDepth)
		return
	}
	p.Type = d.str()
	p.Subtype = d.str()
	p.Params = d.params()
	p.ID = d.str()
	p.Description = d.str()
	p.Encoding = d.str()
	p.Lines = d.offset()
	p.MD5 = d.str()
	p.Disposition = d.str()
	p.DispositionParams = d.params()
	p.Language = d.strs()
	p.Location = d.str()
	p.HeaderStart = d.offset()
	p.BodyStart = p.HeaderStart + d.offset()
	p.End = p.BodyStart + d.offset()
	p.Size = p.End - p.BodyStart
	if d.uvarint() == 1 {
		p.Message = &Envelope{}
		d.envelope(p.Message)
	}
	// A part takes 17 bytes at least, and no message has more than MaxParts
	// (the parser stops there): more is corruption.
	if n := d.count(17); n > 0 {
		if d.parts += n; d.parts > MaxParts {
			d.fail("more than %d parts", MaxParts)
			return
		}
		p.Children = make([]Part, n)
		for i := range p.Children {
			d.part(&p.Children[i], depth+1)
		}
	}
}
