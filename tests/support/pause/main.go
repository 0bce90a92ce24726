// The pod sandbox's pause process for the test node (the CRI's sandbox_image): the registry that
// serves the usual one is unreachable here. It holds the pod's namespaces until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
