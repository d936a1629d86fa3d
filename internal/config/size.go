package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps lower-cased suffixes to multipliers. The bare K/M/G/T are
// binary, as operators usually mean when they write them for memory.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"k":   1 << 10,
	"kib": 1 << 10,
	"m":   1 << 20,
	"mib": 1 << 20,
	"g":   1 << 30,
	"gib": 1 << 30,
	"t":   1 << 40,
	"tib": 1 << 40,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
}

// ParseSize parses a byte size: a plain number of bytes ("1048576"), or a
// number with a suffix: B, KiB, MiB, GiB, TiB or K, M, G, T (binary), or KB,
// MB, GB, TB (decimal). Suffixes are case-insensitive, a fraction is allowed
// ("1.5GiB", rounded down to whole bytes), a negative size is not.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: want a non-negative number of bytes, optionally with a unit such as MiB", s)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB or TB)", s, unit)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: malformed number", s)
	}
	v := math.Floor(f * float64(mult))
	// 2^63 is the first float64 that does not fit in an int64.
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(v), nil
}
