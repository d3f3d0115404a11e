package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
)

// BigMessage returns a multipart message to `to` with an attachment of
// attachment random (incompressible) bytes, base64 in 76-character lines, LF
// line ends. The message is about 1.37 × attachment bytes as sent (CRLF).
func BigMessage(attachment int, to string) []byte {
	raw := make([]byte, attachment)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	b.Grow(len(enc)*77/76 + 1024)
	b.WriteString("From: big@example.net\nTo: " + to + "\nSubject: a large attachment\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/mixed; boundary=\"b0undary\"\n\n--b0undary\nContent-Type: text/plain\n\nSee the attachment.\n" +
		"--b0undary\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"big.bin\"\n\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteByte('\n')
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteString("\n--b0undary--\n")
	return b.Bytes()
}

// MessageOfSize returns a BigMessage that is about total bytes once its line
// ends are CRLF (base64 turns 57 bytes into a 78-byte CRLF line).
func MessageOfSize(total int, to string) []byte {
	return BigMessage(max(total-600, 0)/78*57, to)
}
