module m2c.dev/m2c

go 1.23
