package blobstore

import (
	"encoding/binary"
	"mime"
	"net/http"
	"strings"
)

// sniffLen is how many leading bytes of an upload decide its media type (the
// amount http.DetectContentType considers).
const sniffLen = 512

const octetStream = "application/octet-stream"

// mediaType decides a blob's media type from its first bytes (up to
// sniffLen). The declared type (the request's Content-Type) is used only when
// the content says nothing more specific than application/octet-stream, and
// only if it is a well-formed, non-wildcard media type.
func mediaType(head []byte, declared string) string {
	t := sniff(head)
	if t != octetStream {
		return t
	}
	if d := cleanDeclared(declared); d != "" {
		return d
	}
	return octetStream
}

// sniff is http.DetectContentType plus the ISO base media file format
// (ftyp) brands atproto clients upload: QuickTime, HEIF/HEIC, AVIF and any
// MP4 flavour, which the standard library recognises only in part.
func sniff(head []byte) string {
	if len(head) == 0 {
		return octetStream
	}
	if t := sniffISOBMFF(head); t != "" {
		return t
	}
	return http.DetectContentType(head)
}

// sniffISOBMFF recognises files that start with an ftyp box (MP4, MOV,
// HEIF, AVIF, 3GP, M4A) and old QuickTime files that start with a moov, mdat,
// wide or pnot atom. It returns "" for anything else.
func sniffISOBMFF(head []byte) string {
	if len(head) < 12 {
		return ""
	}
	size := int(binary.BigEndian.Uint32(head[:4]))
	switch string(head[4:8]) {
	case "ftyp":
	case "moov", "mdat", "wide", "pnot":
		if size >= 8 {
			return "video/quicktime"
		}
		return ""
	default:
		return ""
	}
	if size < 16 {
		return ""
	}
	major := string(head[8:12])
	brands := map[string]bool{major: true}
	for i := 16; i+4 <= min(size, len(head)); i += 4 {
		brands[string(head[i:i+4])] = true
	}
	switch {
	case major == "qt  ":
		return "video/quicktime"
	case major == "avif" || major == "avis":
		return "image/avif"
	case major == "heic" || major == "heix" || major == "heim" || major == "heis" ||
		major == "hevc" || major == "hevx":
		return "image/heic"
	case major == "mif1" || major == "msf1":
		switch {
		case brands["avif"] || brands["avis"]:
			return "image/avif"
		case brands["heic"] || brands["heix"] || brands["hevc"] || brands["hevx"]:
			return "image/heic"
		}
		return "image/heif"
	case major == "M4A " || major == "M4B " || major == "M4P ":
		return "audio/mp4"
	case strings.HasPrefix(major, "3g2"):
		return "video/3gpp2"
	case strings.HasPrefix(major, "3gp"):
		return "video/3gpp"
	}
	return "video/mp4"
}

// cleanDeclared returns the declared media type in canonical form, or "" if
// it is empty, a wildcard or malformed.
func cleanDeclared(declared string) string {
	declared = strings.TrimSpace(declared)
	if declared == "" {
		return ""
	}
	mt, params, err := mime.ParseMediaType(declared)
	if err != nil {
		return ""
	}
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || typ == "" || sub == "" || typ == "*" || sub == "*" {
		return ""
	}
	return mime.FormatMediaType(mt, params)
}
