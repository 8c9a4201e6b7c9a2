// Package sim is a simulated barcode scanner for demos and tests. It emits
// realistic carrier tracking numbers (UPS 1Z, FedEx Express, USPS IMpb,
// DHL Express, DHL Paket, UPU S10, Amazon Logistics), with valid check
// digits, at a fixed interval. It has no protocol: readings are generated in
// process, and the device is always connected.
package sim
