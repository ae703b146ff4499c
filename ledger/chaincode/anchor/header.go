package anchor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// HeaderVersion is the only header schema version this chaincode accepts.
const HeaderVersion = 1

// GenesisHash is the prev_hash of the first batch of every site.
var GenesisHash = strings.Repeat("0", 64)

// maxSafeInt is 2^53-1, the largest integer every JSON implementation represents exactly.
const maxSafeInt = int64(1)<<53 - 1

var (
	idPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$`)
	hexPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Header is a batch header. Its fields are declared in sorted key order so that encoding it with
// encoding/json yields RFC 8785 canonical bytes (all values are safe integers or strings that
// need no escaping, which validation guarantees).
type Header struct {
	Amends         *string `json:"amends"`
	BatchID        string  `json:"batch_id"`
	FindingsDigest string  `json:"findings_digest"`
	Kind           string  `json:"kind"`
	LeafCount      int64   `json:"leaf_count"`
	PrevHash       string  `json:"prev_hash"`
	Root           string  `json:"root"`
	SealedMs       int64   `json:"sealed_ms"`
	Site           string  `json:"site"`
	V              int64   `json:"v"`
	WindowEndMs    int64   `json:"window_end_ms"`
	WindowStartMs  int64   `json:"window_start_ms"`
}

// headerFields lists every key a header must carry, in canonical order.
var headerFields = []string{
	"amends", "batch_id", "findings_digest", "kind", "leaf_count", "prev_hash", "root",
	"sealed_ms", "site", "v", "window_end_ms", "window_start_ms",
}

// Canonical returns the canonical (RFC 8785) bytes of h.
func (h *Header) Canonical() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(h); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// HashHex is the lowercase hex SHA-256 of b.
func HashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ValidID reports whether s is a valid batch or site id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

func invalid(format string, args ...any) error {
	return codeErr("INVALID_HEADER", format, args...)
}

// codeErr builds "<CODE>: <message>". Clients split error texts on ';' (the peer joins messages
// with it), so ';' from user input is replaced in the message.
func codeErr(code, format string, args ...any) error {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), ";", ",")
	return errors.New(code + ": " + msg)
}

// ParseHeader decodes raw strictly (every field present, no unknown fields, exact types),
// validates every field, and checks that raw is exactly the canonical encoding of the result.
// Errors start with "INVALID_HEADER: " and name the offending field.
func ParseHeader(raw []byte) (*Header, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, invalid("header is not a JSON object (%v)", err)
	}
	if fields == nil {
		return nil, invalid("header is not a JSON object (got null)")
	}
	var unknown []string
	for k := range fields {
		if !contains(headerFields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown field %q", unknown[0])
	}
	for _, k := range headerFields {
		if _, ok := fields[k]; !ok {
			return nil, invalid("missing field %q", k)
		}
	}

	var h Header
	decodeStr := func(name string, dst *string) error {
		if err := json.Unmarshal(fields[name], dst); err != nil || isNull(fields[name]) {
			return invalid("field %q must be a string", name)
		}
		return nil
	}
	decodeInt := func(name string, dst *int64) error {
		if err := json.Unmarshal(fields[name], dst); err != nil || isNull(fields[name]) {
			return invalid("field %q must be an integer", name)
		}
		if *dst < 0 || *dst > maxSafeInt {
			return invalid("field %q must be an integer in 0..2^53-1, got %d", name, *dst)
		}
		return nil
	}
	steps := []error{
		decodeInt("v", &h.V),
		decodeStr("batch_id", &h.BatchID),
		decodeStr("site", &h.Site),
		decodeStr("kind", &h.Kind),
		decodeInt("window_start_ms", &h.WindowStartMs),
		decodeInt("window_end_ms", &h.WindowEndMs),
		decodeInt("leaf_count", &h.LeafCount),
		decodeInt("sealed_ms", &h.SealedMs),
		decodeStr("root", &h.Root),
		decodeStr("prev_hash", &h.PrevHash),
		decodeStr("findings_digest", &h.FindingsDigest),
	}
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	if !isNull(fields["amends"]) {
		var a string
		if err := json.Unmarshal(fields["amends"], &a); err != nil {
			return nil, invalid("field \"amends\" must be null or a string")
		}
		h.Amends = &a
	}

	if err := h.Validate(); err != nil {
		return nil, err
	}
	canon, err := h.Canonical()
	if err != nil {
		return nil, invalid("cannot re-encode header (%v)", err)
	}
	if !bytes.Equal(canon, raw) {
		return nil, invalid("header bytes are not canonical JSON (RFC 8785: sorted keys, no whitespace, minimal encoding)")
	}
	return &h, nil
}

// Validate checks the field values of h (not the ledger state).
func (h *Header) Validate() error {
	if h.V != HeaderVersion {
		return invalid("field \"v\" must be %d, got %d", HeaderVersion, h.V)
	}
	if !ValidID(h.BatchID) {
		return invalid("field \"batch_id\" %q does not match %s", h.BatchID, idPattern)
	}
	if !ValidID(h.Site) {
		return invalid("field \"site\" %q does not match %s", h.Site, idPattern)
	}
	switch h.Kind {
	case "seal", "amendment", "verdicts", "restatement", "report":
	default:
		return invalid("field \"kind\" must be \"seal\", \"amendment\", \"verdicts\", \"restatement\" or \"report\", got %q", h.Kind)
	}
	amending := h.Kind == "amendment" || h.Kind == "restatement"
	for _, f := range []struct {
		name string
		val  int64
	}{
		{"window_start_ms", h.WindowStartMs}, {"window_end_ms", h.WindowEndMs},
		{"leaf_count", h.LeafCount}, {"sealed_ms", h.SealedMs},
	} {
		if f.val < 0 || f.val > maxSafeInt {
			return invalid("field %q must be an integer in 0..2^53-1, got %d", f.name, f.val)
		}
	}
	if h.WindowEndMs <= h.WindowStartMs {
		return invalid("field \"window_end_ms\" (%d) must be greater than window_start_ms (%d)",
			h.WindowEndMs, h.WindowStartMs)
	}
	for _, f := range []struct{ name, val string }{
		{"root", h.Root}, {"prev_hash", h.PrevHash}, {"findings_digest", h.FindingsDigest},
	} {
		if !hexPattern.MatchString(f.val) {
			return invalid("field %q must be 64 lowercase hex characters, got %q", f.name, f.val)
		}
	}
	switch {
	case amending && h.Amends == nil:
		return invalid("field \"amends\" must name the amended batch when kind is %q", h.Kind)
	case !amending && h.Amends != nil:
		return invalid("field \"amends\" must be null when kind is %q", h.Kind)
	case h.Amends != nil && !ValidID(*h.Amends):
		return invalid("field \"amends\" %q does not match %s", *h.Amends, idPattern)
	case h.Amends != nil && *h.Amends == h.BatchID:
		return invalid("field \"amends\" must not name the batch itself")
	}
	return nil
}

func isNull(m json.RawMessage) bool { return string(bytes.TrimSpace(m)) == "null" }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
