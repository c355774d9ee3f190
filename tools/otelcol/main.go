// Code in the shape the OpenTelemetry Collector Builder (ocb) v0.161.0 generates (main.go and
// main_others.go), written by hand: a minimal collector for fnbench's tests, an OTLP receiver
// (gRPC and HTTP) and the file exporter writing OTLP JSON lines (plus the debug exporter).
// Build: make otelcol (→ build/tools/otelcol). Versions: go.mod; components: builder-config.yaml.

package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	envprovider "go.opentelemetry.io/collector/confmap/provider/envprovider"
	fileprovider "go.opentelemetry.io/collector/confmap/provider/fileprovider"
	yamlprovider "go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"
)

func main() {
	info := component.BuildInfo{
		Command:     "otelcol",
		Description: "fnbench's test OpenTelemetry Collector (OTLP receiver, file exporter)",
		Version:     "0.161.0-fnbench",
	}

	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
			},
		},
	}

	if err := run(set); err != nil {
		log.Fatal(err)
	}
}

func runInteractive(params otelcol.CollectorSettings) error {
	cmd := otelcol.NewCommand(params)
	if err := cmd.Execute(); err != nil {
		log.Fatalf("collector server run finished with error: %v", err)
	}
	return nil
}

func run(params otelcol.CollectorSettings) error {
	return runInteractive(params)
}
