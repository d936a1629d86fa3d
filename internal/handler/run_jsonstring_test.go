package handler

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// escapeInPieces escapes input with jsonString, written in pieces of at
// most size bytes (all at once when size is 0), through a buffer of
// bufSize bytes, and returns it quoted.
func escapeInPieces(t testing.TB, input []byte, size, bufSize int) []byte {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, bufSize)
	_ = bw.WriteByte('"')
	js := &jsonString{w: bw}
	for p := input; len(p) > 0 || size == 0; {
		n := len(p)
		if size > 0 {
			n = min(n, size)
		}
		if k, err := js.Write(p[:n]); k != n || err != nil {
			t.Fatalf("Write of %d bytes = %d, %v", n, k, err)
		}
		p = p[n:]
		if size == 0 {
			break
		}
	}
	if err := js.end(); err != nil {
		t.Fatal(err)
	}
	_ = bw.WriteByte('"')
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// checkAsMarshal fails unless jsonString escapes input as json.Marshal
// escapes the same bytes as a string, whatever pieces it gets them in.
func checkAsMarshal(t testing.TB, input []byte) {
	t.Helper()
	want, err := json.Marshal(string(input))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 2, 3, 5, 4096} {
		for _, bufSize := range []int{16, 4096} {
			if got := escapeInPieces(t, input, size, bufSize); !bytes.Equal(got, want) {
				t.Fatalf("escape %q in pieces of %d through %d bytes:\n got %q\nwant %q", abbreviate([]string{string(input)}), size, bufSize, got, want)
			}
		}
	}
}

func TestJSONStringAsMarshal(t *testing.T) {
	long := strings.Repeat("é€😀<\x00", 20_000) // across every buffer boundary
	for _, tc := range []struct{ name, input string }{
		{"empty", ""},
		{"plain", "hello, world"},
		{"quotes and backslash", `say "hi" \ bye`},
		{"short escapes", "\b\f\n\r\t"},
		{"other control characters", "\x00\x01\x1f\x0b"},
		{"DEL stays", "\x7f"},
		{"HTML", "<script>&amp;</script>"},
		{"line and paragraph separators", "a\u2028b\u2029c"},
		{"multi-byte", "é€😀 ünïcödé"},
		{"invalid byte", "a\xffb"},
		{"lone continuation bytes", "\x80\x80\xbf"},
		{"cut character at the end", "abc\xe2\x82"},
		{"cut 4-byte character at the end", "abc\xf0\x9f\x98"},
		{"cut character in the middle", "a\xe2\x82b"},
		{"cut character then a start byte", "\xe2\xe2\x82\xac"},
		{"surrogate half", "\xed\xa0\x80"},
		{"overlong", "\xc0\xaf\xe0\x80\xaf"},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80"},
		{"replacement character itself", "\uFFFD"},
		{"long mixed", long},
		{"long invalid", strings.Repeat("\xe2\x82", 40_000)},
	} {
		t.Run(tc.name, func(t *testing.T) { checkAsMarshal(t, []byte(tc.input)) })
	}
}

// jsonString keeps what was held back across Writes of any size, down to
// one byte at a time, the start of a character among them.
func TestJSONStringHoldsBackOnlyACutCharacter(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 16)
	js := &jsonString{w: bw}
	for _, b := range []byte("€") {
		_, _ = js.Write([]byte{b})
	}
	if js.npend != 0 {
		t.Errorf("%d bytes held back after a whole character", js.npend)
	}
	_, _ = js.Write([]byte("\xf0\x9f"))
	if js.npend != 2 {
		t.Errorf("%d bytes held back after the start of a 4-byte character, want 2", js.npend)
	}
	_ = js.end()
	_ = bw.Flush()
	if got, want := out.String(), `€\ufffd\ufffd`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x00\"\\<>&", "é€😀", "\u2028\u2029", "\xe2\x82", "a\xffb\xf0\x9f\x98", "\xed\xa0\x80"} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, input []byte, size uint8) {
		want, err := json.Marshal(string(input))
		if err != nil {
			t.Fatal(err)
		}
		if got := escapeInPieces(t, input, int(size), 16); !bytes.Equal(got, want) {
			t.Errorf("escape %q in pieces of %d:\n got %q\nwant %q", input, size, got, want)
		}
	})
}
