package badgerjournal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// maxProblems bounds Verify's answer; a journal that broken needs a restore, not
// a longer list.
const maxProblems = 1000

// verifier collects what Verify finds.
type verifier struct {
	j        *Journal
	ctx      context.Context
	txn      *badger.Txn
	problems []journal.Problem
	steps    int

	// From the message records: what the indexes must hold.
	nrecords   int64
	bytesRaw   int64
	maxSeq     uint64
	withMsgID  int64
	custody    int64
	boxEntries map[string]int64 // mailbox -> messages it must hold
	bodies     []bodyRef        // sorted by body after the record pass
	buf        []byte
}

type bodyRef struct {
	body   uint64
	chunks int
}

func (v *verifier) add(id journal.ID, format string, args ...any) {
	if len(v.problems) < maxProblems {
		v.problems = append(v.problems, journal.Problem{ID: id, Detail: fmt.Sprintf(format, args...)})
	} else if len(v.problems) == maxProblems {
		v.problems = append(v.problems, journal.Problem{Detail: "too many problems; the rest are not listed"})
	}
}

// tick checks for cancellation every so often during the walks.
func (v *verifier) tick() error {
	v.steps++
	if v.steps%1024 != 0 {
		return nil
	}
	return v.j.stopping(v.ctx)
}

// exists reports whether key is present.
func (v *verifier) exists(key []byte) (bool, error) {
	_, err := v.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// indexPoints reports whether the index entry at key holds id.
func (v *verifier) indexPoints(key []byte, id journal.ID) (bool, error) {
	item, err := v.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	got, err := indexedID(item)
	return got == id, err
}

// Verify implements journal.Journal. It reads one consistent snapshot: every
// message record with its chunks (decoded, so it reads the whole journal),
// structure and index entries, then every index, mailbox and the counters.
// Chunks of an append still in flight or of one that never committed carry a
// pending marker and are not problems (Sweep removes the latter); chunks that
// belong to nothing are.
//
// A message without a structure is not a problem: messages journaled before
// structures were stored have none, and nothing in the record tells them apart
// (its format is unchanged, so that an older Lifeline still reads it);
// Structure answers ErrNotFound for them and the caller parses the message. A
// structure that does not decode, does not span the message, or belongs to no
// message is a problem.
func (j *Journal) Verify(ctx context.Context) ([]journal.Problem, error) {
	v := &verifier{j: j, ctx: ctx, boxEntries: make(map[string]int64)}
	err := j.view(ctx, func(txn *badger.Txn) error {
		v.txn = txn
		for _, pass := range []func() error{v.records, v.indexes, v.structures, v.mailboxes, v.counters, v.chunks} {
			if err := pass(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return v.problems, fmt.Errorf("badgerjournal: verify: %w", err)
	}
	return v.problems, nil
}

// records checks every message record against its own index entries and
// chunks.
func (v *verifier) records() error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagMessage}})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := v.tick(); err != nil {
			return err
		}
		var id journal.ID
		k := it.Item().Key()
		if len(k) != 1+len(id) {
			v.add(id, "bad message key %x", k)
			continue
		}
		copy(id[:], k[1:])
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		rec, err := decodeRecord(val)
		if err != nil {
			v.add(id, "%v", err)
			continue
		}
		if err := v.record(id, rec); err != nil {
			return err
		}
	}
	slices.SortFunc(v.bodies, func(a, b bodyRef) int {
		switch {
		case a.body < b.body:
			return -1
		case a.body > b.body:
			return 1
		}
		return 0
	})
	for i := 1; i < len(v.bodies); i++ {
		if v.bodies[i].body == v.bodies[i-1].body {
			v.add(journal.ID{}, "body %d belongs to two messages", v.bodies[i].body)
		}
	}
	return nil
}

func (v *verifier) record(id journal.ID, rec *record) error {
	v.nrecords++
	v.bytesRaw += rec.Size
	v.maxSeq = max(v.maxSeq, rec.Seq)
	v.bodies = append(v.bodies, bodyRef{body: rec.Body, chunks: rec.Chunks})

	check := func(key []byte, what string) error {
		ok, err := v.indexPoints(key, id)
		if err == nil && !ok {
			v.add(id, "%s index entry missing", what)
		}
		return err
	}
	if err := check(seqKey(rec.Seq), "arrival"); err != nil {
		return err
	}
	if err := check(timeKey(rec.Env.Received, rec.Seq), "time"); err != nil {
		return err
	}
	if mid := indexedMessageID(rec.Summary.MessageID); mid != "" {
		v.withMsgID++
		if err := check(msgIDKey(mid, rec.Seq), "Message-ID"); err != nil {
			return err
		}
	}

	// Every recipient's mailboxes hold the message, and it is in no other.
	want := map[string]bool{}
	for i, rc := range rec.Env.Recipients {
		if !rc.State.Valid() {
			v.add(id, "recipient %d has state %s", i, rc.State)
		}
		for _, m := range rc.Mailboxes {
			want[m] = true
		}
		if rc.State.Undelivered() {
			v.custody++
			val, ok, err := get(v.txn, custodyKey(rec.Seq, i))
			if err != nil {
				return err
			}
			if !ok || !bytes.Equal(val, custodyValue(id, &rc)) {
				v.add(id, "recipient %d is %s but not in the custody queue as such", i, rc.State)
			}
		}
	}
	for _, b := range rec.Boxes {
		if !want[b.Name] {
			v.add(id, "in mailbox %q, which no recipient maps to", b.Name)
		}
		delete(want, b.Name)
		v.boxEntries[b.Name]++
		val, ok, err := get(v.txn, uidKey(b.Name, b.UID))
		if err != nil {
			return err
		}
		if !ok {
			v.add(id, "mailbox %q has no UID %d", b.Name, b.UID)
			continue
		}
		it, err := decodeItem(val)
		if err != nil || it.ID != id || it.Size != rec.Size || !it.Received.Equal(rec.Env.Received) {
			v.add(id, "mailbox %q UID %d holds another message or a wrong summary", b.Name, b.UID)
		} else if it.Body != 0 && (it.Body != rec.Body || int(it.Chunks) != rec.Chunks) {
			v.add(id, "mailbox %q UID %d points to body %d (%d chunks), the record to %d (%d)", b.Name, b.UID, it.Body, it.Chunks, rec.Body, rec.Chunks)
		}
	}
	for m := range want {
		v.add(id, "mailbox %q does not hold the message", m)
	}

	if err := v.structure(id, rec); err != nil {
		return err
	}
	return v.body(id, rec)
}

// structure checks a message's structure, if it has one.
func (v *verifier) structure(id journal.ID, rec *record) error {
	val, ok, err := get(v.txn, structureKey(id))
	if err != nil || !ok {
		return err
	}
	var info mimestruct.Info
	switch err := info.UnmarshalBinary(val); {
	case errors.Is(err, mimestruct.ErrVersion):
		// Written by another version of the parser: Structure says
		// ErrNotFound and the caller parses again.
	case err != nil:
		v.add(id, "structure: %v", err)
	case info.Body.HeaderStart != 0 || info.Body.End != rec.Size:
		v.add(id, "structure spans [%d,%d), the message has %d bytes", info.Body.HeaderStart, info.Body.End, rec.Size)
	}
	return nil
}

// structures checks that every structure belongs to a message.
func (v *verifier) structures() error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagStructure}, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := v.tick(); err != nil {
			return err
		}
		k := it.Item().Key()
		var id journal.ID
		if len(k) != 1+len(id) {
			v.add(id, "bad structure key %x", k)
			continue
		}
		copy(id[:], k[1:])
		if ok, err := v.exists(messageKey(id)); err != nil {
			return err
		} else if !ok {
			v.add(id, "structure of no message")
		}
	}
	return nil
}

// body decodes a message's chunks and checks they add up to its size.
func (v *verifier) body(id journal.ID, rec *record) error {
	var total int64
	for i := range rec.Chunks {
		item, err := v.txn.Get(chunkKey(rec.Body, i))
		if errors.Is(err, badger.ErrKeyNotFound) {
			v.add(id, "chunk %d of %d missing", i, rec.Chunks)
			return nil
		}
		if err != nil {
			return err
		}
		err = item.Value(func(val []byte) error {
			var err error
			v.buf, err = v.j.decodeChunk(v.buf, val)
			return err
		})
		if err != nil {
			v.add(id, "chunk %d does not decode: %v", i, err)
			return nil
		}
		total += int64(len(v.buf))
	}
	if total != rec.Size {
		v.add(id, "chunks hold %d bytes, record says %d", total, rec.Size)
	}
	if ok, err := v.exists(chunkKey(rec.Body, rec.Chunks)); err != nil {
		return err
	} else if ok {
		v.add(id, "chunk %d exists beyond the %d recorded", rec.Chunks, rec.Chunks)
	}
	return nil
}

// indexes checks that every index entry points at a stored message and that
// each index holds as many entries as the records call for (so none is
// duplicated).
func (v *verifier) indexes() error {
	for _, ix := range []struct {
		tag  byte
		name string
		want int64
	}{
		{tagSeq, "arrival", v.nrecords},
		{tagTime, "time", v.nrecords},
		{tagMsgID, "Message-ID", v.withMsgID},
		{tagCustody, "custody", v.custody},
	} {
		var n int64
		it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{ix.tag}})
		for it.Rewind(); it.Valid(); it.Next() {
			if err := v.tick(); err != nil {
				it.Close()
				return err
			}
			n++
			id, err := indexedID(it.Item())
			if err != nil {
				v.add(journal.ID{}, "%s index: %v", ix.name, err)
				continue
			}
			ok, err := v.exists(messageKey(id))
			if err != nil {
				it.Close()
				return err
			}
			if !ok {
				v.add(id, "%s index entry %x points at no message", ix.name, it.Item().Key())
			}
		}
		it.Close()
		if n != ix.want {
			v.add(journal.ID{}, "%s index has %d entries, the messages call for %d", ix.name, n, ix.want)
		}
	}
	return nil
}

// mailboxes checks each mailbox's record against its UID index.
func (v *verifier) mailboxes() error {
	type seen struct {
		n      int64
		maxUID uint32
	}
	uids := map[string]*seen{}
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagUID}})
	for it.Rewind(); it.Valid(); it.Next() {
		if err := v.tick(); err != nil {
			it.Close()
			return err
		}
		name, uid, ok := parseUIDKey(it.Item().Key())
		if !ok {
			v.add(journal.ID{}, "bad mailbox index key %x", it.Item().Key())
			continue
		}
		s := uids[name]
		if s == nil {
			s = &seen{}
			uids[name] = s
		}
		s.n++
		s.maxUID = max(s.maxUID, uid)
		id, err := indexedID(it.Item())
		if err != nil {
			v.add(journal.ID{}, "mailbox %q UID %d: %v", name, uid, err)
			continue
		}
		if ok, err := v.exists(messageKey(id)); err != nil {
			it.Close()
			return err
		} else if !ok {
			v.add(id, "mailbox %q UID %d points at no message", name, uid)
		}
	}
	it.Close()

	var boxes int64
	it = v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagMailbox}})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		boxes++
		name := string(it.Item().Key()[1:])
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		mb, err := decodeMailbox(val)
		if err != nil {
			v.add(journal.ID{}, "mailbox %q: %v", name, err)
			continue
		}
		s := uids[name]
		delete(uids, name)
		if s == nil {
			s = &seen{}
		}
		if mb.UIDValidity == 0 {
			v.add(journal.ID{}, "mailbox %q has UIDVALIDITY 0", name)
		}
		if mb.UIDNext <= s.maxUID {
			v.add(journal.ID{}, "mailbox %q: UIDNEXT %d not above UID %d", name, mb.UIDNext, s.maxUID)
		}
		if mb.Messages != s.n || s.n != v.boxEntries[name] {
			v.add(journal.ID{}, "mailbox %q counts %d messages, holds %d, its messages name it %d times",
				name, mb.Messages, s.n, v.boxEntries[name])
		}
	}
	for name := range uids {
		v.add(journal.ID{}, "UIDs of mailbox %q, which has no record", name)
	}
	st, err := getStats(v.txn)
	if err != nil {
		return err
	}
	if st.Mailboxes != boxes {
		v.add(journal.ID{}, "stats count %d mailboxes, there are %d", st.Mailboxes, boxes)
	}
	return nil
}

// counters checks the journal-wide counters.
func (v *verifier) counters() error {
	st, err := getStats(v.txn)
	if err != nil {
		return err
	}
	if st.Messages != v.nrecords || st.BytesRaw != v.bytesRaw {
		v.add(journal.ID{}, "stats count %d messages of %d bytes, there are %d of %d bytes",
			st.Messages, st.BytesRaw, v.nrecords, v.bytesRaw)
	}
	seq, err := getUint64(v.txn, []byte(keySeq))
	if err != nil {
		return err
	}
	if seq < v.maxSeq {
		v.add(journal.ID{}, "sequence %d below the highest used, %d", seq, v.maxSeq)
	}
	return nil
}

// chunks checks that every chunk belongs to a message or to a pending body.
func (v *verifier) chunks() error {
	find := func(body uint64) (bodyRef, bool) {
		i, ok := slices.BinarySearchFunc(v.bodies, body, func(r bodyRef, b uint64) int {
			switch {
			case r.body < b:
				return -1
			case r.body > b:
				return 1
			}
			return 0
		})
		if !ok {
			return bodyRef{}, false
		}
		return v.bodies[i], true
	}

	pending := map[uint64]bool{}
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagPending}})
	for it.Rewind(); it.Valid(); it.Next() {
		body, ok := parsePendingKey(it.Item().Key())
		if !ok {
			v.add(journal.ID{}, "bad pending key %x", it.Item().Key())
			continue
		}
		pending[body] = true
		if _, ok := find(body); ok {
			v.add(journal.ID{}, "body %d is committed but still marked pending", body)
		}
	}
	it.Close()

	it = v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagChunk}})
	defer it.Close()
	last, reported := uint64(0), false
	for it.Rewind(); it.Valid(); it.Next() {
		if err := v.tick(); err != nil {
			return err
		}
		body, n, ok := parseChunkKey(it.Item().Key())
		if !ok {
			v.add(journal.ID{}, "bad chunk key %x", it.Item().Key())
			continue
		}
		if body != last {
			last, reported = body, false
		}
		if pending[body] || reported {
			continue
		}
		ref, ok := find(body)
		switch {
		case !ok:
			v.add(journal.ID{}, "chunks of body %d belong to no message", body)
			reported = true
		case n >= ref.chunks:
			v.add(journal.ID{}, "chunk %d of body %d beyond its message's %d", n, body, ref.chunks)
			reported = true
		}
	}
	return nil
}
