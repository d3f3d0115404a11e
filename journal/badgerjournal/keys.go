package badgerjournal

import (
	"encoding/binary"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// Key layout. Every key starts with one byte naming its table; integers are
// big-endian so that Badger's byte order is numeric order.
//
//	m ID(16)                         -> message record (record.go)
//	i ID(16)                         -> the message's MIME structure (mimestruct.Info,
//	                                    encoded), written with the record; absent for
//	                                    messages journaled before structures existed
//	s seq(8)                         -> ID             arrival order
//	t sec(8) nsec(4) seq(8)          -> ID             by Envelope.Received, for Scan and Sweep
//	q seq(8) rcpt(2)                 -> ID state(1) next-attempt(8) server
//	                                    custody queue: undelivered recipients in arrival order
//	k name                           -> control value (journal.ControlStore)
//	e len(2) log seq(8)              -> event (journal.ControlStore)
//	x len(2) message-id seq(8)       -> ID             by Message-ID
//	b mailbox-name                   -> mailbox record (UIDVALIDITY, UIDNEXT, count)
//	u len(2) mailbox-name uid(4)     -> mailbox item (ID, received, size, body, chunks)
//	c body(8) chunk(4)               -> ChunkSize raw bytes (the last one shorter), compressed:
//	                                    a zstd frame, or 0x01 and an S2 block (chunk.go)
//	p body(8)                        -> (empty) a body whose chunks are written but whose
//	                                    message is not committed yet: in flight or orphaned
//	_seq, _stats, _format, _bodyseq  -> counters and the format version
//	_ev log                          -> last event seq of a log
//
// The message ID is the identity (journal.Identity), so the dedupe look-up is the
// m key itself. Bodies have their own ids (from a Badger sequence) because the
// chunks of a large message are written before its identity is known (the body
// is hashed as it streams) and two concurrent offers of one message must not
// write over each other's chunks.
//
// Times in keys are Unix seconds with the sign bit flipped, so that times before
// 1970 sort first, and nanoseconds.
const (
	tagMessage = 'm'
	// tagStructure keys the MIME structure apart from the record, so that
	// Scan and List, which read records, do not read structures too.
	tagStructure = 'i'
	tagSeq       = 's'
	tagTime      = 't'
	tagCustody   = 'q'
	tagMsgID     = 'x'
	tagMailbox   = 'b'
	tagUID       = 'u'
	tagChunk     = 'c'
	tagPending   = 'p'
	tagControl   = 'k'
	tagEvent     = 'e'
)

// Single keys, as strings so that they are constants; []byte(keySeq) makes a
// fresh key each time.
const (
	keySeq     = "_seq"
	keyStats   = "_stats"
	keyFormat  = "_format"
	keyBodySeq = "_bodyseq"
	keyEvSeq   = "_ev"
)

// formatVersion is stored under _format; Open refuses a journal with another
// one, except that it takes a journal of format 2 (before S2 chunks, see
// chunk.go) and marks it 3: it reads its zstd chunks as they are, while a
// program that reads only format 2 must not open it once it holds S2 chunks.
const (
	formatVersion    = 3
	formatVersionOld = 2
)

// maxNameLen bounds mailbox names and indexed Message-IDs, which are part of
// keys (Badger's limit is 64 KB; long keys cost on every look-up).
const maxNameLen = 1024

func messageKey(id journal.ID) []byte {
	return append([]byte{tagMessage}, id[:]...)
}

func structureKey(id journal.ID) []byte {
	return append([]byte{tagStructure}, id[:]...)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagSeq}, seq)
}

func timeKey(t time.Time, seq uint64) []byte {
	k := appendTime([]byte{tagTime}, t)
	return binary.BigEndian.AppendUint64(k, seq)
}

// timePrefix is the start of every time key at or after t.
func timePrefix(t time.Time) []byte {
	return appendTime([]byte{tagTime}, t)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// parseTimeKey returns the time and seq of a t key.
func parseTimeKey(k []byte) (time.Time, uint64, bool) {
	if len(k) != 1+8+4+8 || k[0] != tagTime {
		return time.Time{}, 0, false
	}
	sec := int64(binary.BigEndian.Uint64(k[1:]) ^ (1 << 63))
	nsec := int64(binary.BigEndian.Uint32(k[9:]))
	return time.Unix(sec, nsec), binary.BigEndian.Uint64(k[13:]), true
}

func custodyKey(seq uint64, rcpt int) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tagCustody}, seq)
	return binary.BigEndian.AppendUint16(k, uint16(rcpt))
}

func parseCustodyKey(k []byte) (seq uint64, rcpt int, ok bool) {
	if len(k) != 1+8+2 || k[0] != tagCustody {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), int(binary.BigEndian.Uint16(k[9:])), true
}

// msgIDPrefix is the prefix of the x keys of one Message-ID.
func msgIDPrefix(msgid string) []byte {
	k := binary.BigEndian.AppendUint16([]byte{tagMsgID}, uint16(len(msgid)))
	return append(k, msgid...)
}

func msgIDKey(msgid string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(msgIDPrefix(msgid), seq)
}

func mailboxKey(name string) []byte {
	return append([]byte{tagMailbox}, name...)
}

// uidPrefix is the prefix of one mailbox's u keys; the length in front keeps
// "a" and "ab" apart.
func uidPrefix(name string) []byte {
	k := binary.BigEndian.AppendUint16([]byte{tagUID}, uint16(len(name)))
	return append(k, name...)
}

func uidKey(name string, uid uint32) []byte {
	return binary.BigEndian.AppendUint32(uidPrefix(name), uid)
}

// parseUIDKey returns the mailbox name and UID of a u key.
func parseUIDKey(k []byte) (name string, uid uint32, ok bool) {
	if len(k) < 3 || k[0] != tagUID {
		return "", 0, false
	}
	n := int(binary.BigEndian.Uint16(k[1:]))
	if len(k) != 3+n+4 {
		return "", 0, false
	}
	return string(k[3 : 3+n]), binary.BigEndian.Uint32(k[3+n:]), true
}

func chunkPrefix(body uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagChunk}, body)
}

func chunkKey(body uint64, n int) []byte {
	return appendChunkKey(make([]byte, 0, 1+8+4), body, n)
}

// appendChunkKey appends chunk n of body's key to dst, for a loop that
// reuses one buffer.
func appendChunkKey(dst []byte, body uint64, n int) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(append(dst, tagChunk), body), uint32(n))
}

func parseChunkKey(k []byte) (body uint64, n int, ok bool) {
	if len(k) != 1+8+4 || k[0] != tagChunk {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), int(binary.BigEndian.Uint32(k[9:])), true
}

func pendingKey(body uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagPending}, body)
}

func parsePendingKey(k []byte) (uint64, bool) {
	if len(k) != 1+8 || k[0] != tagPending {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// indexedMessageID returns the form of a Message-ID the x index uses: without
// surrounding white space and angle brackets. It returns "" for values that are
// not indexed (empty or too long).
func indexedMessageID(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' {
		v = v[1 : len(v)-1]
	}
	if len(v) > maxNameLen {
		return ""
	}
	return v
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
