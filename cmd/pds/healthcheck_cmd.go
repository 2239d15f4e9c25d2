package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// healthcheckCmd: pds healthcheck: exit 0 when the local server answers
// /xrpc/_health, 1 otherwise. The container image has no shell or curl,
// so its HEALTHCHECK runs this.
func healthcheckCmd(args []string, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(os.Getenv, "", "")
	if err != nil {
		fmt.Fprintf(stderr, "pds healthcheck: configuration: %v\n", err)
		return 1
	}
	u := localURL(cfg) + "/xrpc/_health"
	if cfg.TLS == "autocert" {
		u = cfg.PublicURL + "/xrpc/_health"
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(u)
	if err != nil {
		fmt.Fprintf(stderr, "pds healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "pds healthcheck: %s answered %s\n", u, resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}
