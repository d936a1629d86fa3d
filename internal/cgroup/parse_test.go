package cgroup

import "testing"

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name, data, mnt, root string
		ok                    bool
	}{
		{"hybrid", `25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
`, "/sys/fs/cgroup/unified", "/", true},
		{"unified, no optional fields", "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup", "/", true},
		{"namespace root and escapes", `40 1 0:26 /system.slice/x /mnt/cg\040v2 rw shared:1 master:2 - cgroup2 none rw` + "\n", "/mnt/cg v2", "/system.slice/x", true},
		{"none", "30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\nbroken line\n", "", "", false},
	}
	for _, tc := range tests {
		mnt, root, ok := parseMountinfo([]byte(tc.data))
		if mnt != tc.mnt || root != tc.root || ok != tc.ok {
			t.Errorf("%s: parseMountinfo = %q, %q, %v; want %q, %q, %v", tc.name, mnt, root, ok, tc.mnt, tc.root, tc.ok)
		}
	}
}

func TestUnifiedPath(t *testing.T) {
	tests := []struct {
		data, want string
		ok         bool
	}{
		{"12:pids:/x\n1:name=systemd:/system.slice/execgw.service\n0::/system.slice/execgw.service\n", "/system.slice/execgw.service", true},
		{"0::/\n", "/", true},
		{"4:memory:/a\n", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, ok := unifiedPath([]byte(tc.data))
		if got != tc.want || ok != tc.ok {
			t.Errorf("unifiedPath(%q) = %q, %v; want %q, %v", tc.data, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKeyed(t *testing.T) {
	data := []byte("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n")
	for _, tc := range []struct {
		key  string
		want int64
		ok   bool
	}{{"usage_usec", 1234, true}, {"system_usec", 234, true}, {"usec", 0, false}} {
		if got, ok := keyed(data, tc.key); got != tc.want || ok != tc.ok {
			t.Errorf("keyed(%q) = %d, %v; want %d, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"01J9ZQ3V6W8K2N4P5R7T9X1Y3Z": true, "a.b-c_d": true,
		"": false, ".": false, "..": false, ".x": false, "a/b": false, "a\nb": false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestLimitsControllers(t *testing.T) {
	if got := (Limits{}).Controllers(); len(got) != 0 {
		t.Errorf("Limits{}.Controllers() = %v, want none", got)
	}
	got := Limits{MemoryMax: 1, PidsMax: 1, CPUMax: 0.5}.Controllers()
	if len(got) != 3 || got[0] != "memory" || got[1] != "pids" || got[2] != "cpu" {
		t.Errorf("Controllers() = %v, want [memory pids cpu]", got)
	}
}
