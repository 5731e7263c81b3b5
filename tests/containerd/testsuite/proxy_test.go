// containerd's snapshotter conformance suite (snapshots/testsuite of the containerd
// sources Debian packages) run against `rdpull snapshotter` through containerd's own
// proxy client (snapshots/proxy), as containerd talks to a proxy plugin. Each subtest
// gets a fresh root: a daemon is started on it and stopped with SIGTERM afterwards.
// Built in GOPATH mode, offline: scripts/containerd-testsuite.
package testsuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func startDaemon(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin := os.Getenv("RDPULL_BIN")
	if bin == "" {
		return nil, nil, fmt.Errorf("RDPULL_BIN is not set")
	}
	sock := filepath.Join(root, "rdpull.sock")
	cmd := exec.Command(bin, "--root", filepath.Join(root, "store"), "snapshotter", "--address", sock)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, nil, fmt.Errorf("rdpull snapshotter did not listen on %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// As containerd dials a proxy plugin (a unix:// address): :authority is "localhost".
	conn, err := grpc.Dial(sock, grpc.WithInsecure(), grpc.WithAuthority("localhost"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
	if err != nil {
		cmd.Process.Kill()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "rdpull")
	stop := func() error {
		conn.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("rdpull snapshotter after SIGTERM: %w", err)
		}
		return nil
	}
	return sn, stop, nil
}

func TestRdpullSnapshotter(t *testing.T) {
	testsuite.SnapshotterSuite(t, "rdpull", startDaemon)
}
