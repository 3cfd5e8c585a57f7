"""The e-CNY hardware wallet card: APDU applet, purse, vouchers, certificates, tier limits, mock card store."""
