//! Packets the gateway originates: TCP resets and ICMP destination-unreachable errors.
