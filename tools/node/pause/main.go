// Command pause is the test node's Pod sandbox: it holds the Pod's namespaces, reaps the
// children it inherits and exits on SIGINT or SIGTERM. It stands in for Kubernetes' pause image,
// which would have to come from a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Zombies of processes re-parented to the sandbox, which is PID 1 of a shared PID namespace.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
