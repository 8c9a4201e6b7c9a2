package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/kardianos/service"

	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/update"
)

const (
	serviceName        = "mailroomd"
	serviceDescription = "Mailroom edge daemon: scanners to the parcel-tracking cloud"
)

// control runs install, uninstall, start, stop, restart and status through
// the platform's service manager (systemd, the Windows service manager,
// launchd).
func control(action string, args []string, stdout, stderr io.Writer) int {
	var cfgFile string
	if action == "install" {
		path, ok := configFlag("install", args, stderr)
		if !ok {
			return 2
		}
		if _, err := config.Load(path); err != nil {
			fmt.Fprintf(stderr, "mailroomd: invalid configuration:\n%v\n", err)
			return 2
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 2
		}
		cfgFile = abs
		if unit := update.PackagedUnit(); unit != "" {
			fmt.Fprintf(stdout, "The mailroomd package already installed its hardened unit (%s).\n"+
				"Put the configuration in /etc/mailroomd/mailroomd.yaml and run: systemctl enable --now mailroomd\n", unit)
			return 0
		}
	}
	svcCfg := &service.Config{Name: serviceName, DisplayName: serviceName, Description: serviceDescription,
		Arguments: []string{"run", "--config", cfgFile}}
	svc, err := service.New(&program{}, svcCfg)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	if action == "status" {
		st, err := svc.Status()
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: status: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, map[service.Status]string{service.StatusRunning: "running", service.StatusStopped: "stopped"}[st])
		if st != service.StatusRunning {
			return 3
		}
		return 0
	}
	if err := service.Control(svc, action); err != nil {
		fmt.Fprintf(stderr, "mailroomd: %s: %v\n", action, err)
		return 1
	}
	fmt.Fprintf(stdout, "mailroomd: %s done (%s)\n", action, svc.Platform())
	return 0
}
