"""ESP webhooks: one module per ESP (verify + parse), and the intake that stores them."""
