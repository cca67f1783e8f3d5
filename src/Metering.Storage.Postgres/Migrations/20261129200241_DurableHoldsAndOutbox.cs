using System;
using Microsoft.EntityFrameworkCore.Migrations;
using Npgsql.EntityFrameworkCore.PostgreSQL.Metadata;

#nullable disable

namespace Metering.Storage.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class DurableHoldsAndOutbox : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "degraded_policy",
                table: "usage_types",
                type: "character varying(8)",
                maxLength: 8,
                nullable: false,
                defaultValue: "ledger");

            migrationBuilder.AddColumn<long>(
                name: "held",
                table: "usage_totals",
                type: "bigint",
                nullable: false,
                defaultValue: 0L);

            migrationBuilder.CreateTable(
                name: "counter_outbox",
                columns: table => new
                {
                    id = table.Column<long>(type: "bigint", nullable: false)
                        .Annotation("Npgsql:ValueGenerationStrategy", NpgsqlValueGenerationStrategy.IdentityAlwaysColumn),
                    kind = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false),
                    subject_id = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: true),
                    usage_type = table.Column<string>(type: "text", nullable: true),
                    period_start = table.Column<DateTime>(type: "timestamp with time zone", nullable: true),
                    created_at = table.Column<DateTime>(type: "timestamp with time zone", nullable: false, defaultValueSql: "now()")
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_counter_outbox", x => x.id);
                });

            migrationBuilder.CreateTable(
                name: "holds",
                columns: table => new
                {
                    subject_id = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: false),
                    reservation_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    request_id = table.Column<string>(type: "character varying(256)", maxLength: 256, nullable: true),
                    placed_at = table.Column<DateTime>(type: "timestamp with time zone", nullable: false),
                    expires_at = table.Column<DateTime>(type: "timestamp with time zone", nullable: false),
                    ended_at = table.Column<DateTime>(type: "timestamp with time zone", nullable: true),
                    end_reason = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: true)
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_holds", x => new { x.subject_id, x.reservation_id });
                });

            migrationBuilder.CreateTable(
                name: "hold_lines",
                columns: table => new
                {
                    subject_id = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: false),
                    reservation_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false),
                    usage_type = table.Column<string>(type: "text", nullable: false),
                    period_start = table.Column<DateTime>(type: "timestamp with time zone", nullable: false),
                    period_end = table.Column<DateTime>(type: "timestamp with time zone", nullable: false),
                    amount = table.Column<long>(type: "bigint", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_hold_lines", x => new { x.subject_id, x.reservation_id, x.usage_type });
                    table.ForeignKey(
                        name: "FK_hold_lines_holds_subject_id_reservation_id",
                        columns: x => new { x.subject_id, x.reservation_id },
                        principalTable: "holds",
                        principalColumns: new[] { "subject_id", "reservation_id" },
                        onDelete: ReferentialAction.Cascade);
                });

            migrationBuilder.CreateIndex(
                name: "IX_hold_lines_subject_id_usage_type",
                table: "hold_lines",
                columns: new[] { "subject_id", "usage_type" });

            migrationBuilder.CreateIndex(
                name: "IX_holds_live_expires_at",
                table: "holds",
                column: "expires_at",
                filter: "ended_at IS NULL");

            migrationBuilder.CreateIndex(
                name: "IX_holds_subject_id_request_id",
                table: "holds",
                columns: new[] { "subject_id", "request_id" },
                unique: true,
                filter: "request_id IS NOT NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "counter_outbox");

            migrationBuilder.DropTable(
                name: "hold_lines");

            migrationBuilder.DropTable(
                name: "holds");

            migrationBuilder.DropColumn(
                name: "degraded_policy",
                table: "usage_types");

            migrationBuilder.DropColumn(
                name: "held",
                table: "usage_totals");
        }
    }
}
