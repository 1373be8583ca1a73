"""What goes over the wire: vector encodings and the response documents built from vectors."""
