package events

import (
	"bytes"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
)

// frameHeader is the DAG-CBOR header {t: typ, op: 1} of a message frame, map
// keys in canonical order (shorter first).
func frameHeader(typ string) []byte {
	var b bytes.Buffer
	b.WriteByte(0xa2)          // map(2)
	b.Write([]byte{0x61, 't'}) // "t"
	writeText(&b, typ)
	b.Write([]byte{0x62, 'o', 'p'}) // "op"
	b.WriteByte(0x01)               // 1
	return b.Bytes()
}

func writeText(b *bytes.Buffer, s string) {
	switch n := len(s); {
	case n < 24:
		b.WriteByte(0x60 | byte(n))
	case n < 256:
		b.Write([]byte{0x78, byte(n)})
	default:
		b.Write([]byte{0x79, byte(n >> 8), byte(n)})
	}
	b.WriteString(s)
}

// ErrorFrame encodes an error frame: header {op: -1} and body
// {error, message}, as the event-stream spec defines it.
func ErrorFrame(name, message string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xa1, 0x62, 'o', 'p', 0x20}) // {op: -1}
	if message == "" {
		b.WriteByte(0xa1)
	} else {
		b.WriteByte(0xa2)
	}
	writeText(&b, "error")
	writeText(&b, name)
	if message != "" {
		writeText(&b, "message")
		writeText(&b, message)
	}
	return b.Bytes()
}

// InfoFrame encodes an #info message (such as OutdatedCursor).
func InfoFrame(name, message string) []byte {
	var b bytes.Buffer
	b.Write(frameHeader("#info"))
	info := &comatproto.SyncSubscribeRepos_Info{Name: name}
	if message != "" {
		info.Message = &message
	}
	_ = info.MarshalCBOR(&b) // a bytes.Buffer does not fail
	return b.Bytes()
}
