// Command forktable measures what a big descriptor table costs each process
// start, and what forking from a thread with a table of its own saves
// (docs/performance.md, issue 6): the prize of the spawner-thread
// experiment, without a gateway around it.
//
// It opens -fds descriptors (loopback sockets, both ends, like a server's
// clients), then starts /bin/true -runs times from -conc goroutines, three
// ways in one run: forked by the calling goroutine's thread (which shares
// the whole table), and forked by 1 or 2 spawner threads that unshared
// their table (unshare(CLONE_FILES)) and closed every socket in it. It
// prints, for each way, runs per second and the CPU per run of this
// process and of its children, and the ratios to the first way.
//
//	go run ./bench/forktable [-fds 2000] [-conc 64] [-runs 4000]
//
// Linux only; the spawner threads end with the program.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	fds := flag.Int("fds", 2000, "descriptors open during the runs (loopback sockets, both ends)")
	conc := flag.Int("conc", 64, "goroutines starting processes at once")
	runs := flag.Int("runs", 4000, "processes started per way")
	flag.Parse()
	if err := run(*fds, *conc, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "forktable:", err)
		os.Exit(1)
	}
}

func run(fds, conc, runs int) error {
	closeSockets, err := openSockets(fds / 2)
	if err != nil {
		return err
	}
	defer closeSockets()
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(null)
	// Opened before the spawners copy the table, so theirs has it too.
	files := []uintptr{uintptr(null), uintptr(null), uintptr(null)}

	open := countFDs("/proc/self/fd")
	type way struct {
		name string
		fork func() (int, error)
	}
	direct := func() (int, error) { return forkTrue(files) }
	ways := []way{{"forked by the calling thread (whole table)", direct}}
	for _, n := range []int{1, 2} {
		reqs := make(chan chan result)
		for range n {
			ready := make(chan error)
			go spawner(reqs, files, ready) // runs until the program ends
			if err := <-ready; err != nil {
				return err
			}
		}
		ways = append(ways, way{fmt.Sprintf("forked by %d spawner thread(s) (emptied table)", n), func() (int, error) {
			reply := make(chan result, 1)
			reqs <- reply
			r := <-reply
			return r.pid, r.err
		}})
	}

	fmt.Printf("%d descriptors open, %d goroutines, %d starts of /bin/true per way, GOMAXPROCS %d\n\n",
		open, conc, runs, runtime.GOMAXPROCS(0))
	fmt.Println("| way | runs/s | CPU per run: this process | children | runs/s ratio | children ratio |")
	fmt.Println("|---|---|---|---|---|---|")
	var base measurement
	for i, w := range ways {
		m, err := measure(conc, runs, w.fork)
		if err != nil {
			return err
		}
		if i == 0 {
			base = m
		}
		fmt.Printf("| %s | %.0f | %.3f ms | %.3f ms | %.2f | %.2f |\n", w.name, m.rate, ms(m.self), ms(m.children),
			m.rate/base.rate, float64(m.children)/float64(base.children))
	}
	return nil
}

type result struct {
	pid int
	err error
}

// spawner makes its thread fork from a table without the sockets and
// serves requests. Its goroutine never returns once it has forked: a
// child's parent-death signal would fire with the thread.
func spawner(reqs <-chan chan result, files []uintptr, ready chan<- error) {
	runtime.LockOSThread()
	// /proc/PID/fd shows the main thread's table: that one keeps sharing
	// the process's. Hand over to a goroutine that cannot run here.
	if unix.Gettid() == os.Getpid() {
		go spawner(reqs, files, ready)
		runtime.UnlockOSThread()
		return
	}
	if err := unix.Unshare(unix.CLONE_FILES); err != nil {
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	ents, err := os.ReadDir("/proc/thread-self/fd")
	if err != nil {
		ready <- err
		return // locked: Go ends the thread
	}
	for _, e := range ents {
		if target, err := os.Readlink("/proc/thread-self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			fd, _ := strconv.Atoi(e.Name())
			unix.Close(fd)
		}
	}
	ready <- nil
	for reply := range reqs {
		pid, err := forkTrue(files)
		reply <- result{pid, err}
	}
}

func forkTrue(files []uintptr) (int, error) {
	return syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{
		Env:   []string{},
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
}

type measurement struct {
	rate           float64
	self, children time.Duration // CPU per run
}

// measure starts runs processes with fork from conc goroutines, each
// waiting for its child before the next.
func measure(conc, runs int, fork func() (int, error)) (measurement, error) {
	self0, children0 := cpu()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for range conc {
		wg.Add(1)
		go func() { // exits after its share of the runs
			defer wg.Done()
			for range runs / conc {
				pid, err := fork()
				if err != nil {
					errs <- err
					return
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return measurement{}, err
	}
	took := time.Since(start)
	self1, children1 := cpu()
	n := time.Duration(runs / conc * conc)
	return measurement{
		rate:     float64(n) / took.Seconds(),
		self:     (self1 - self0) / n,
		children: (children1 - children0) / n,
	}, nil
}

// openSockets opens n loopback connections, both ends in this process.
func openSockets(n int) (closeAll func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	var conns []net.Conn
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			closeAll()
			return nil, err
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			closeAll()
			return nil, err
		}
		conns = append(conns, c, s)
	}
	return closeAll, nil
}

func cpu() (self, children time.Duration) {
	var r syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	self = time.Duration(r.Utime.Nano() + r.Stime.Nano())
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &r)
	children = time.Duration(r.Utime.Nano() + r.Stime.Nano())
	return self, children
}

func countFDs(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
