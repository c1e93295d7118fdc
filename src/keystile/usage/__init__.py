"""Usage metering (contract §11): requests per key, UTC hour and outcome."""
