package handler

import (
	"bufio"
	"unicode/utf8"
)

// jsonString writes the bytes written to it as the contents of a JSON
// string (without the quotes), escaped exactly as encoding/json's Marshal
// escapes a Go string: invalid UTF-8 becomes \ufffd, control characters,
// '"' and '\' are escaped, and so are '<', '>', '&', U+2028 and U+2029. It
// holds back at most the start of one UTF-8 character cut by the end of a
// Write, so it can escape any amount of output through a bounded buffer.
// Call end at the end.
type jsonString struct {
	w       *bufio.Writer
	pending [utf8.UTFMax - 1]byte // the start of a character the last Write cut
	npend   int
	esc     [6]byte // one \u escape, built here rather than allocated
}

const hexDigits = "0123456789abcdef"

// jsonSafe holds the ASCII bytes that go into a JSON string as they are
// (encoding/json's htmlSafeSet).
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		safe[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return safe
}()

func (j *jsonString) Write(p []byte) (int, error) {
	n := len(p)
	if j.npend > 0 {
		// The character cut last time, completed by at most the first
		// bytes of p.
		var joined [2*utf8.UTFMax - 2]byte
		k := copy(joined[:], j.pending[:j.npend])
		k += copy(joined[k:], p[:min(len(p), utf8.UTFMax-1)])
		done := j.escape(joined[:k], false)
		if done < j.npend {
			// Still incomplete: p was too short to complete it, and is
			// now all in joined[done:k].
			j.npend = copy(j.pending[:], joined[done:k])
			return n, j.err()
		}
		p = p[done-j.npend:]
		j.npend = 0
	}
	done := j.escape(p, false)
	j.npend = copy(j.pending[:], p[done:])
	return n, j.err()
}

// end escapes what was held back, a character cut for good (each of its
// bytes is invalid), and returns the first error of the buffer's writer.
func (j *jsonString) end() error {
	j.escape(j.pending[:j.npend], true)
	j.npend = 0
	return j.err()
}

func (j *jsonString) err() error {
	// bufio.Writer keeps its first error and returns it from every later
	// call, an empty Write too.
	_, err := j.w.Write(nil)
	return err
}

// escape writes src escaped and returns how many bytes it took: all of
// them, unless final is false and src ends in the start of a character
// that the next bytes may complete.
func (j *jsonString) escape(src []byte, final bool) int {
	w := j.w
	start := 0
	for i := 0; i < len(src); {
		b := src[i]
		if b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			_, _ = w.Write(src[start:i])
			switch b {
			case '\\', '"':
				_ = w.WriteByte('\\')
				_ = w.WriteByte(b)
			case '\b':
				_, _ = w.WriteString(`\b`)
			case '\f':
				_, _ = w.WriteString(`\f`)
			case '\n':
				_, _ = w.WriteString(`\n`)
			case '\r':
				_, _ = w.WriteString(`\r`)
			case '\t':
				_, _ = w.WriteString(`\t`)
			default:
				_, _ = w.Write(j.unicodeEscape('0', '0', hexDigits[b>>4], hexDigits[b&0xF]))
			}
			i++
			start = i
			continue
		}
		if !final && !utf8.FullRune(src[i:]) {
			_, _ = w.Write(src[start:i])
			return i
		}
		c, size := utf8.DecodeRune(src[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			_, _ = w.Write(src[start:i])
			_, _ = w.WriteString(`\ufffd`)
		case c == '\u2028' || c == '\u2029':
			_, _ = w.Write(src[start:i])
			_, _ = w.Write(j.unicodeEscape('2', '0', '2', hexDigits[c&0xF]))
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	_, _ = w.Write(src[start:])
	return len(src)
}

// unicodeEscape is \u followed by the four hex digits given.
func (j *jsonString) unicodeEscape(a, b, c, d byte) []byte {
	j.esc = [6]byte{'\\', 'u', a, b, c, d}
	return j.esc[:]
}
